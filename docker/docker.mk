# The container image (included from the Makefile: `include docker/docker.mk`, after STAMP and BIN).
# `make docker-check` installs podman, runc and mmdebstrap when missing, makes a Debian bookworm
# base with a venv in /opt/venv (no registry needed), builds the Dockerfile with podman on it,
# converts the demo model inside the image and with .venv, and fails unless both
# model_int8.tflite files have the same sha256. Root only; repeat runs reuse the base and the
# layer cache. All of its state is in ~/.cache/edgepipe/container (EDGEPIPE_CONTAINER_CACHE);
# `make docker-clean` deletes it. docker/podman.sh runs podman on that state (images, run, rmi).
.PHONY: docker-check docker-image docker-clean

docker-check: $(STAMP)
	EDGEPIPE_HOST_EDGEPIPE=$(BIN)/edgepipe EDGEPIPE_HADOLINT=$(BIN)/hadolint bash docker/check.sh check

# Only the packages, the base and the image (localhost/edgepipe:latest), no conversions.
docker-image:
	EDGEPIPE_HADOLINT=$(BIN)/hadolint bash docker/check.sh build

docker-clean:
	bash docker/clean.sh

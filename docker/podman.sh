#!/usr/bin/env bash
# podman on the state of make docker-check (its private config and image storage), e.g.
#   docker/podman.sh images
#   docker/podman.sh run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" localhost/edgepipe demo --out demo-out
set -euo pipefail
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_podman_env
exec podman "$@"

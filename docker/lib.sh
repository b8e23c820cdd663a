# shellcheck shell=bash disable=SC2034  # the variables are the scripts' that source this
# Shared by docker/check.sh, docker/clean.sh and docker/podman.sh (sourced, not run).
#
# Everything the container workflow makes lives in one folder, $EDGEPIPE_CONTAINER_CACHE
# (default ~/.cache/edgepipe/container): podman's private config, its image storage and run
# state, the base rootfs tarball, build temp files, logs and the two demo outputs. Deleting that
# folder (make docker-clean) removes all of it; podman's system-wide storage is never touched.

STATE="${EDGEPIPE_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgepipe/container}"
SUITE="${EDGEPIPE_BASE_SUITE:-bookworm}"
BASE_IMAGE="${EDGEPIPE_BASE_IMAGE:-localhost/edgepipe-base:$SUITE}"
IMAGE="${EDGEPIPE_IMAGE:-localhost/edgepipe:latest}"
BASE_TAR="$STATE/base/$SUITE.tar"
# What `podman import` sets, so that python and pip behave as in the official python image:
# the venv made inside the rootfs comes first on PATH.
BASE_PATH="/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MARKER="$STATE/.edgepipe-container-state"

say() { printf '[docker] %s\n' "$*"; }
die() { printf '[docker] ERROR: %s\n' "$*" >&2; exit 1; }

# The host's hard limits: a container's RLIMIT_NOFILE / RLIMIT_NPROC cannot be raised above them,
# and podman's defaults (1048576 open files) are above them here, so `podman run` would fail.
hard_limit() {  # hard_limit FLAG CAP -> min(ulimit -H FLAG, CAP)
    local value
    value="$(ulimit -H "$1")"
    if [ "$value" = unlimited ] || [ "$value" -gt "$2" ]; then value="$2"; fi
    printf '%s' "$value"
}

# Private podman configuration under $STATE, (re)written on every call so it follows the host.
setup_podman_env() {
    mkdir -p "$STATE"/{storage,run,libpod-tmp,tmp,logs}
    touch "$MARKER"
    # podman (containers/image) keeps a blob-info cache in /var/lib/containers/cache whatever the
    # storage config says; remember whether it is ours to delete in make docker-clean.
    if [ "$(id -u)" -eq 0 ] && [ ! -e /var/lib/containers ]; then
        touch "$STATE/created-var-lib-containers"
    fi
    local nofile nproc
    nofile="$(hard_limit -n 1048576)"
    nproc="$(hard_limit -u 32768)"
    cat > "$STATE/containers.conf" <<EOF
# Written by docker/lib.sh; rewritten on every run.
[containers]
# Within the host's hard limits (ulimit -Hn / -Hu), else runc fails raising them.
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
# crun cannot create containers on this cgroup layout; runc can.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$STATE/logs/events.log"
tmp_dir = "$STATE/libpod-tmp"
image_copy_tmp_dir = "$STATE/tmp"
EOF
    cat > "$STATE/storage.conf" <<EOF
# Written by docker/lib.sh; rewritten on every run.
[storage]
driver = "overlay"
graphroot = "$STATE/storage"
runroot = "$STATE/run"
EOF
    export CONTAINERS_CONF="$STATE/containers.conf"
    export CONTAINERS_STORAGE_CONF="$STATE/storage.conf"
    export TMPDIR="$STATE/tmp"  # buildah's build context copies and layer blobs, instead of /var/tmp
}

# Seconds since the epoch, with a fraction, for the per-step timings.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

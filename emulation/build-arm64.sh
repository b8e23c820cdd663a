#!/usr/bin/env bash
# Build, once, everything `edgepipe run --target rpi4 --emulate` needs on an x86 machine:
#   * QEMU user mode (Debian's qemu-user: dynamic, so it loads TCG plugins),
#   * an aarch64 sysroot from Debian's arm64 packages, unpacked with dpkg -x under a separate
#     apt state (the host's apt configuration is left alone),
#   * the aarch64 wheels of ai-edge-litert and numpy, from PyPI,
#   * an ARM /proc/cpuinfo inside the sysroot (LiteRT crashes on the host's x86 one; qemu's -L
#     prefix applies to /proc too),
#   * the instruction-counting TCG plugin, built against qemu-plugin.h from Debian's qemu source.
# Usage: emulation/build-arm64.sh [CACHE_DIR]   (default: ~/.cache/edgepipe/arm64)
set -euo pipefail

CACHE="${1:-${EDGEPIPE_ARM_CACHE:-$HOME/.cache/edgepipe/arm64}}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
STAMP="$CACHE/.complete"
# Bump when this script changes what it builds.
RECIPE_VERSION=2

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$RECIPE_VERSION" ]]; then
    echo "arm64 emulator ready in $CACHE"
    exit 0
fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v qemu-aarch64 >/dev/null || ! command -v dpkg-source >/dev/null; then
    echo "installing qemu-user and dpkg-dev (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user dpkg-dev xz-utils >/dev/null
fi

mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
APTDIR="$WORK/apt"
mkdir -p "$APTDIR"/{lists/partial,cache/archives/partial,etc,state} "$WORK/debs" "$WORK/src" "$WORK/sysroot"
touch "$APTDIR/status"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$APTDIR/etc/sources.list" <<SOURCES
deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian bookworm main
deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian-security bookworm-security main
deb-src [signed-by=$KEYRING] http://deb.debian.org/debian bookworm main
deb-src [signed-by=$KEYRING] http://deb.debian.org/debian-security bookworm-security main
SOURCES
APT=(apt-get -qq -o "Dir::Etc::SourceList=$APTDIR/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State=$APTDIR/state" -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
     -o "Dir::State::status=$APTDIR/status" -o APT::Architecture=arm64 -o "APT::Architectures::=arm64"
     -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

echo "fetching arm64 package lists"
"${APT[@]}" update

PACKAGES=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3
          libcrypt1 libuuid1 libtinfo6 libncursesw6 libsqlite3-0 libdb5.3 libnsl2 libtirpc3
          libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libreadline8
          python3.11-minimal libpython3.11-minimal libpython3.11-stdlib media-types tzdata)
echo "downloading ${#PACKAGES[@]} arm64 packages"
(cd "$WORK/debs" && "${APT[@]}" download "${PACKAGES[@]}")
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/sysroot"; done

echo "downloading aarch64 wheels: ai-edge-litert, numpy"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 -d "$WORK/wheels" "ai-edge-litert==2.3.*" "numpy>=1.26,<2.5"
SITE="$WORK/sysroot/opt/edgepipe/site-packages"
mkdir -p "$SITE"
for wheel in "$WORK"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$SITE"; done

echo "byte-compiling the sysroot's Python (dpkg -x skips the packages' post-install step)"
if [[ "$("$PYTHON" -c 'import sys; print(sys.version_info[:2] == (3, 11))')" == "True" ]]; then
    "$PYTHON" -m compileall -q -j 0 "$WORK/sysroot/usr/lib/python3.11" "$SITE" >/dev/null || true
else
    QEMU_CPU=cortex-a72 qemu-aarch64 -L "$WORK/sysroot" "$WORK/sysroot/usr/bin/python3.11" -m compileall -q \
        /usr/lib/python3.11 /opt/edgepipe/site-packages >/dev/null || true
fi

echo "writing an ARM /proc/cpuinfo into the sysroot"
mkdir -p "$WORK/sysroot/proc"
cp "$HERE/cpuinfo-cortex-a72" "$WORK/sysroot/proc/cpuinfo"

echo "fetching qemu-plugin.h from Debian's qemu source package"
QEMU_VERSION="$(dpkg-query -W -f='${source:Version}' qemu-user)"
(cd "$WORK/src" && "${APT[@]}" source --download-only "qemu=$QEMU_VERSION")
ORIG="$(ls "$WORK"/src/qemu_*.orig.tar.* | head -1)"
mkdir -p "$WORK/include"
tar -xf "$ORIG" -C "$WORK/include" --wildcards --no-anchored --strip-components=3 '*/include/qemu/qemu-plugin.h'
test -f "$WORK/include/qemu-plugin.h"

echo "building the instruction-counting plugin"
cc -O2 -fPIC -shared -Wall -Werror -I"$WORK/include" "$HERE/insn_count.c" -o "$WORK/insn_count.so"

echo "checking: LiteRT imports under qemu-aarch64"
QEMU_CPU=cortex-a72 qemu-aarch64 -L "$WORK/sysroot" "$WORK/sysroot/usr/bin/python3.11" -c \
    "import sys; sys.path.insert(0, '/opt/edgepipe/site-packages'); import numpy, ai_edge_litert.interpreter; print('ok', numpy.__version__)"

rm -rf "$CACHE/sysroot" "$CACHE/insn_count.so" "$CACHE/include"
mv "$WORK/sysroot" "$CACHE/sysroot"
mv "$WORK/insn_count.so" "$CACHE/insn_count.so"
mv "$WORK/include" "$CACHE/include"
echo "$RECIPE_VERSION" > "$STAMP"
echo "arm64 emulator ready in $CACHE"

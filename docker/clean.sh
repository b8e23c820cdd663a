#!/usr/bin/env bash
# make docker-clean: remove the images, the base tarball, podman's private storage and
# everything else make docker-check made (its state folder), and podman's blob-info cache in
# /var/lib/containers if docker-check created that folder.
set -euo pipefail
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ ! -d "$STATE" ]; then
    say "nothing to clean: no $STATE"
    exit 0
fi
[ -f "$MARKER" ] || die "$STATE has no $(basename "$MARKER"): not made by docker/check.sh, left alone"

setup_podman_env
exec 9>"$STATE/.lock"
flock -n 9 || die "a docker/check.sh is using $STATE"
if command -v podman >/dev/null; then
    podman rm --all --force >/dev/null 2>&1 || true
    podman rmi --all --force >/dev/null 2>&1 || true
    say "removed the images of $STATE/storage"
fi
# Nothing may stay mounted in the folder (an overlay of an interrupted build) before deleting it.
mounted() { awk -v state="$STATE/" 'index($2, state) == 1 { print $2 }' /proc/self/mounts | sort -r; }
for mount in $(mounted); do
    umount "$mount" || umount -l "$mount"
done
[ -z "$(mounted)" ] || die "still mounted under $STATE: $(mounted | tr '\n' ' ')"
created_var_lib=false
[ ! -f "$STATE/created-var-lib-containers" ] || created_var_lib=true
rm -rf --one-file-system "$STATE"
say "removed $STATE"
if $created_var_lib; then
    rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
    rmdir /var/lib/containers/cache /var/lib/containers 2>/dev/null || true
    say "removed podman's blob-info cache in /var/lib/containers"
fi

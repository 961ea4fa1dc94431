#!/usr/bin/env bash
# Save the built image as a gzip-compressed tarball for upload to grand-challenge.org.
#
# Writes ${EXPORT_DIR}/${IMAGE_NAME}_${VERSION}.tar.gz (a `docker save` archive,
# which Grand-Challenge accepts as an algorithm image) and prints its size and
# SHA-256. Builds the image first if it is missing.
#   IMAGE_NAME, VERSION, ENGINE   as in build.sh
#   EXPORT_DIR    default: the repository root (*.tar.gz is git-ignored)
#   GZIP_LEVEL    1-9, default 6
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

die() { printf 'export.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
log() { printf 'export.sh: %s\n' "$*" >&2; }

# shellcheck source=scripts/container_lib.sh
source scripts/container_lib.sh
IMAGE="${IMAGE_NAME}:${VERSION}"
EXPORT_DIR="${EXPORT_DIR:-$HERE}"
GZIP_LEVEL="${GZIP_LEVEL:-6}"
[[ "$GZIP_LEVEL" =~ ^[1-9]$ ]] || die "GZIP_LEVEL must be 1-9 (got '$GZIP_LEVEL')."

pick_engine "Install Docker or podman to export the image."

if ! "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image ${IMAGE} not found; building it."
    ENGINE="$ENGINE" IMAGE_NAME="$IMAGE_NAME" VERSION="$VERSION" ./build.sh
fi

# pigz compresses on all cores and writes the same gzip format.
if command -v pigz >/dev/null 2>&1; then compress=(pigz "-${GZIP_LEVEL}" -c); else compress=(gzip "-${GZIP_LEVEL}" -c); fi
save=("$ENGINE" save)
# The docker-archive format is what `docker load` and Grand-Challenge read (podman
# records the name as localhost/${IMAGE}; Grand-Challenge ignores names anyway).
[[ "$ENGINE" == podman ]] && save+=(--format docker-archive)

mkdir -p "$EXPORT_DIR"
out="${EXPORT_DIR}/${IMAGE_NAME}_${VERSION}.tar.gz"
tmp="${out}.partial"
trap 'rm -f "$tmp"' EXIT
log "saving ${IMAGE} with ${ENGINE} | ${compress[0]} -> ${out}"
start=$SECONDS
"${save[@]}" "$IMAGE" | "${compress[@]}" >"$tmp"
mv -f "$tmp" "$out"
trap - EXIT

size="$(du -h "$out" | cut -f1)"
sum="$(sha256sum "$out" | cut -d' ' -f1)"
log "wrote ${out} (${size}, sha256 ${sum}) in $((SECONDS - start))s"
printf '%s\n' "$out"

#!/usr/bin/env bash
# Build the algorithm container image.
#
# Tags: ${IMAGE_NAME}:${VERSION} and ${IMAGE_NAME}:latest
#   IMAGE_NAME  default autopet-sw-unet
#   VERSION     default: version in pyproject.toml, else `git describe`, else 0.0.0
#   BASE_IMAGE  passed through to the Dockerfile when set (default in the
#               Dockerfile: the official pytorch/pytorch runtime image)
#   ENGINE      docker or podman; default: docker if a docker engine answers,
#               podman otherwise
# Extra arguments are passed to `<engine> build` unchanged (e.g. --no-cache).
#
# With podman (no docker engine), builds use --isolation=chroot and the host's
# CA bundle is mounted for pip (PIP_CERT), so pip works behind a TLS-inspecting
# proxy. PIP_INDEX_URL / PIP_EXTRA_INDEX_URL are passed on when set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

die() { printf 'build.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
# shellcheck source=scripts/container_lib.sh
source scripts/container_lib.sh
pick_engine "Install Docker (https://docs.docker.com/engine/install/) or podman (apt-get install -y podman runc),
or run the native test instead: python -m pytest tests/test_container_native.py"

for f in Dockerfile requirements.txt process.py common model lesion_report runner weights; do
    [[ -e "$f" ]] || die "'$f' is missing from $HERE; the image cannot be built without it."
done
# The image runs as an unprivileged user and COPY keeps the files' modes, so
# everything copied in must be world-readable. Checkpoints written through
# tempfile.mkstemp() are 0600; make them readable here rather than ship an image
# that cannot open its own weights (the Dockerfile checks this again).
mapfile -t unreadable < <(find process.py common model lesion_report runner weights \( -type f ! -perm -o=r \) -o \( -type d ! -perm -o=rx \))
if [[ ${#unreadable[@]} -gt 0 ]]; then
    printf 'build.sh: making %d file(s) world-readable for the container user (chmod a+rX): %s\n' \
        "${#unreadable[@]}" "${unreadable[*]:0:5}" >&2
    chmod a+rX -- "${unreadable[@]}"
fi
if [[ -z "$(find weights -type f \( -name '*.pt' -o -name 'manifest.json' \) -print -quit)" ]]; then
    printf 'build.sh: WARNING: weights/ holds no .pt checkpoint or manifest.json; the image will not segment anything.\n' >&2
fi

args=(build --tag "${IMAGE_NAME}:${VERSION}" --tag "${IMAGE_NAME}:latest" --build-arg "VERSION=${VERSION}")
[[ -n "${BASE_IMAGE:-}" ]] && args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
[[ -n "${PIP_INDEX_URL:-}" ]] && args+=(--build-arg "PIP_INDEX_URL=${PIP_INDEX_URL}")
[[ -n "${PIP_EXTRA_INDEX_URL:-}" ]] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}")

if [[ "$ENGINE" == podman ]]; then
    args+=(--isolation=chroot)
    host_ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
    if [[ -f "$host_ca" ]]; then
        args+=(--volume "${host_ca}:/run/host-ca/ca.crt:ro" --build-arg PIP_CERT=/run/host-ca/ca.crt)
    fi
    [[ -n "${BASE_IMAGE:-}" && "$BASE_IMAGE" == localhost/* ]] && args+=(--pull=never)
fi

printf 'build.sh: %s %s (base: %s)\n' "$ENGINE" "${IMAGE_NAME}:${VERSION}" "${BASE_IMAGE:-Dockerfile default}" >&2
start=$SECONDS
"$ENGINE" "${args[@]}" "$@" .
printf 'build.sh: built %s:%s and %s:latest in %ds\n' "$IMAGE_NAME" "$VERSION" "$IMAGE_NAME" "$((SECONDS - start))" >&2
"$ENGINE" image ls "${IMAGE_NAME}" >&2 || true

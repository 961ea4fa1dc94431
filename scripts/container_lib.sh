# shellcheck shell=bash
# Shared by build.sh, test.sh and export.sh (sourced): image name and version, and the engine.
# The sourcing script defines die MESSAGE [EXIT_CODE] first.

project_version() {
    local v=""
    if [[ -f pyproject.toml ]]; then
        v="$(sed -nE 's/^version[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' pyproject.toml | head -n 1)"
    fi
    if [[ -z "$v" ]] && command -v git >/dev/null 2>&1; then
        v="$(git describe --tags --always --dirty 2>/dev/null || true)"
    fi
    printf '%s\n' "${v:-0.0.0}"
}

# pick_engine HINT [EXIT_CODE]: docker when its engine answers, podman otherwise (ENGINE overrides).
pick_engine() {
    if [[ -n "${ENGINE:-}" ]]; then
        command -v "$ENGINE" >/dev/null 2>&1 || die "ENGINE=$ENGINE is not installed."
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
        ENGINE=podman
    else
        die "no container engine: 'docker info' fails (no daemon?) and podman is not usable.
$1" "${2:-1}"
    fi
}

IMAGE_NAME="${IMAGE_NAME:-autopet-sw-unet}"
VERSION="${VERSION:-$(project_version)}"

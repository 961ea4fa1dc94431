#!/usr/bin/env bash
# Build a local stand-in for the pytorch/pytorch base image.
#
# Docker Hub cannot be reached from the development machine, so this script
# assembles an image that looks enough like pytorch/pytorch for our Dockerfile:
# Debian bookworm (minbase), Python 3.11 in a virtual environment at /opt/conda
# with /opt/conda/bin first on PATH (the real image also keeps `python` and
# `pip` there), and the CPU build of torch, pinned to the project's version.
# The rootfs is imported into podman (or docker) as a single-layer image.
#
# Every step leaves a stamp file next to the rootfs, so a second run only does
# what is missing. Set FORCE=1 to start from scratch.
#
# Environment (all optional):
#   STANDIN_DIR    where the rootfs and stamps live (default /var/tmp/pytorch-standin)
#   STANDIN_IMAGE  image name to create (default localhost/pytorch-standin:<torch>-cpu)
#   TORCH_VERSION  torch release to install (default 2.13.0)
#   DEBIAN_MIRROR  apt mirror for debootstrap (default: first deb.debian.org-like
#                  URI found in /etc/apt/sources.list*, else http://deb.debian.org/debian)
#   SUITE          Debian suite (default bookworm; its python3 must match the torch wheel)
#   FORCE          1 = delete the rootfs and the image first
#
# Prints the BASE_IMAGE value for build.sh on the last line of output.
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
SUITE="${SUITE:-bookworm}"
STANDIN_DIR="${STANDIN_DIR:-/var/tmp/pytorch-standin}"
STANDIN_IMAGE="${STANDIN_IMAGE:-localhost/pytorch-standin:${TORCH_VERSION}-cpu}"
ROOTFS="${STANDIN_DIR}/rootfs"
STAMPS="${STANDIN_DIR}/stamps"

log() { printf '[standin] %s\n' "$*" >&2; }
die() { printf '[standin] ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" -eq 0 ]] || die "debootstrap and chroot need root; run this script as root."

# ---------------------------------------------------------------- engine
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
else
    die "neither a docker engine nor podman is available (apt-get install -y podman runc)."
fi
for tool in debootstrap chroot tar; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (apt-get install -y debootstrap)."
done

if [[ "${FORCE:-0}" == "1" ]]; then
    log "FORCE=1: removing ${STANDIN_DIR} and ${STANDIN_IMAGE}"
    "$ENGINE" rmi -f "$STANDIN_IMAGE" >/dev/null 2>&1 || true
    # Only unmount what we might have mounted ourselves.
    for m in proc sys dev/pts dev; do
        mountpoint -q "${ROOTFS}/${m}" 2>/dev/null && umount -l "${ROOTFS}/${m}"
    done
    rm -rf -- "${STANDIN_DIR}"
fi

# podman here has no systemd: it needs the cgroupfs manager, runc, and rlimits no
# higher than the ones it runs under (it may not raise them) for `run`.
if [[ "$ENGINE" == podman ]]; then
    RUN=(podman --cgroup-manager cgroupfs run --runtime runc
        --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
else
    RUN=(docker run)
fi

if "$ENGINE" image inspect "$STANDIN_IMAGE" >/dev/null 2>&1; then
    log "image ${STANDIN_IMAGE} already exists; nothing to do (FORCE=1 rebuilds it)."
    echo "BASE_IMAGE=${STANDIN_IMAGE}"
    exit 0
fi

mkdir -p "$STAMPS"
stamp() { touch "${STAMPS}/$1"; }
done_already() { [[ -f "${STAMPS}/$1" ]]; }

# ---------------------------------------------------------------- mirror
if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
    DEBIAN_MIRROR="$(
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | grep -Ev '^[[:space:]]*#' | grep -E '^(deb[[:space:]]|URIs:)' \
            | grep -Eo 'https?://[^ ]+/debian/?' | head -n 1 || true
    )"
    DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi

# ---------------------------------------------------------------- 1. rootfs
if ! done_already debootstrap; then
    log "debootstrap --variant=minbase ${SUITE} from ${DEBIAN_MIRROR} into ${ROOTFS}"
    rm -rf -- "${ROOTFS}"
    mkdir -p "${ROOTFS}"
    debootstrap --variant=minbase --include=ca-certificates "${SUITE}" "${ROOTFS}" "${DEBIAN_MIRROR}"
    stamp debootstrap
else
    log "rootfs present (${ROOTFS})"
fi

# The chroot resolves names and trusts the same CAs as the host (the host may
# sit behind a TLS-inspecting proxy whose CA lives only in the host bundle).
# Both files are put back to Debian defaults before the image is imported.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
mount_into() { # mount_into <fstype|--bind> <source> <target-in-rootfs>
    local target="${ROOTFS}/$3"
    mkdir -p "$target"
    mountpoint -q "$target" && return 0
    if [[ "$1" == --bind ]]; then mount --bind "$2" "$target"; else mount -t "$1" "$2" "$target"; fi
    mounted+=("$target")
}
in_chroot() { chroot "${ROOTFS}" /usr/bin/env -i \
    PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

prepare_chroot() {
    mount_into proc proc proc
    mount_into --bind /dev dev
    cp /etc/resolv.conf "${ROOTFS}/etc/resolv.conf"
    if [[ -f "$HOST_CA" ]]; then
        cp "$HOST_CA" "${ROOTFS}/tmp/host-ca.crt"
    fi
}

# ---------------------------------------------------------------- 2. python
if ! done_already python; then
    prepare_chroot
    log "installing python3 and python3-venv in the rootfs"
    # apt inside the chroot trusts the host bundle too (needed only for https mirrors).
    in_chroot apt-get -o Acquire::https::CaInfo=/tmp/host-ca.crt update -qq
    in_chroot apt-get -o Acquire::https::CaInfo=/tmp/host-ca.crt install -y -qq --no-install-recommends \
        python3 python3-venv libgomp1
    in_chroot python3 -m venv /opt/conda
    stamp python
else
    log "python present"
fi

# ---------------------------------------------------------------- 3. torch
if ! done_already torch; then
    prepare_chroot
    log "looking for the torch ${TORCH_VERSION} CPU wheel that pip on this host uses"
    wheel_dir="${STANDIN_DIR}/wheels"
    mkdir -p "$wheel_dir"
    wheel="$(find "$wheel_dir" -maxdepth 1 -name "torch-${TORCH_VERSION}*-cp311-*.whl" | head -n 1)"
    if [[ -z "$wheel" ]]; then
        if python3 -m pip --version >/dev/null 2>&1; then HOST_PIP=(python3 -m pip)
        elif command -v pip >/dev/null 2>&1; then HOST_PIP=(pip)
        else die "no pip on this host to fetch the torch wheel; put it in ${wheel_dir}."; fi
        # pip's own configuration (find-links, local indexes, CA) decides where it comes from.
        "${HOST_PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux_2_28_x86_64 -d "$wheel_dir" "torch==${TORCH_VERSION}" >&2 \
            || die "pip could not fetch torch==${TORCH_VERSION} for cp311."
        wheel="$(find "$wheel_dir" -maxdepth 1 -name "torch-${TORCH_VERSION}*-cp311-*.whl" | head -n 1)"
    fi
    [[ -n "$wheel" ]] || die "no torch-${TORCH_VERSION} cp311 wheel in ${wheel_dir}."
    log "using $(basename "$wheel")"
    mkdir -p "${ROOTFS}/tmp/wheels"
    cp "$wheel" "${ROOTFS}/tmp/wheels/"
    # The wheel comes from local disk; its small pure-Python dependencies come from PyPI.
    pip_cert=()
    [[ -f "${ROOTFS}/tmp/host-ca.crt" ]] && pip_cert=(--cert /tmp/host-ca.crt)
    in_chroot python -m pip install --no-cache-dir --disable-pip-version-check "${pip_cert[@]}" \
        "/tmp/wheels/$(basename "$wheel")"
    in_chroot python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >&2
    rm -rf "${ROOTFS}/tmp/wheels"
    stamp torch
else
    log "torch present"
fi

# ---------------------------------------------------------------- 4. import
log "cleaning the rootfs and importing it as ${STANDIN_IMAGE}"
cleanup
mounted=()
rm -f "${ROOTFS}/tmp/host-ca.crt"
rm -rf "${ROOTFS}"/var/lib/apt/lists/* "${ROOTFS}"/var/cache/apt/*.bin "${ROOTFS}"/root/.cache
printf 'nameserver 127.0.0.1\n' >"${ROOTFS}/etc/resolv.conf"

changes=(
    --change 'ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change 'CMD ["/bin/bash"]'
)
tar --numeric-owner -C "${ROOTFS}" -c . | "$ENGINE" import "${changes[@]}" - "$STANDIN_IMAGE" >&2
"${RUN[@]}" --rm --network none "$STANDIN_IMAGE" \
    python -c "import sys, torch; print('stand-in OK: python', sys.version.split()[0], 'torch', torch.__version__)" >&2 \
    || { "$ENGINE" rmi -f "$STANDIN_IMAGE" >/dev/null 2>&1; die "the imported image does not run python/torch."; }

echo "BASE_IMAGE=${STANDIN_IMAGE}"

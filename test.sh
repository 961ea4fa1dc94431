#!/usr/bin/env bash
# Run the algorithm container on test/input the way the challenge organisers'
# test script does, then compare its masks with test/expected_output.
#
# Passes when every expected mask has a prediction with identical geometry
# (size, spacing, origin, direction), the same pixel type, and Dice >= MIN_DICE,
# and /output/results.json is valid JSON. Builds the image first if it is missing.
#
# Environment (all optional):
#   IMAGE_NAME, VERSION, ENGINE   as in build.sh
#   MIN_DICE      default 0.99
#   SHM_SIZE      default 128m, the organisers' value (see docs/container.md)
#   MEMORY        default 15g (--memory and --memory-swap, as the organisers)
#   GPU           auto (default: use the GPU when nvidia-smi works), 1 (require), 0 (CPU only)
#   READ_ONLY     1 (default): read-only root filesystem with a tmpfs /tmp, which proves
#                 the code writes nowhere but /output and /tmp; 0: as the organisers run it
#   KEEP_OUTPUT   a host folder to copy the container's /output into (kept after the run)
#   TEST_DIR      default ./test (holds input/ and expected_output/)
# Extra arguments are passed to process.py (e.g. --device cpu).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

die() { printf 'test.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
log() { printf 'test.sh: %s\n' "$*" >&2; }

# shellcheck source=scripts/container_lib.sh
source scripts/container_lib.sh
IMAGE="${IMAGE_NAME}:${VERSION}"
MIN_DICE="${MIN_DICE:-0.99}"
SHM_SIZE="${SHM_SIZE:-128m}"
MEMORY="${MEMORY:-15g}"
GPU="${GPU:-auto}"
READ_ONLY="${READ_ONLY:-1}"
TEST_DIR="$(cd "${TEST_DIR:-test}" 2>/dev/null && pwd)" || die "no test folder at ${TEST_DIR:-test}."
OUTPUT_SUBDIR=images/automated-petct-lesion-segmentation

# ---------------------------------------------------------------- engine
pick_engine "The container cannot be tested here. Test the same code path without a container instead:
    python -m pytest tests/test_container_native.py" 3

# podman without systemd (as on the development machine) needs the cgroupfs
# manager and runc, and may not raise rlimits above its own: these defaults work
# there and on ordinary hosts. Override with PODMAN_GLOBAL_FLAGS / PODMAN_RUN_FLAGS.
if [[ "$ENGINE" == podman ]]; then
    default_global="--cgroup-manager cgroupfs"
    default_run="--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096"
    read -r -a engine_cmd <<<"podman ${PODMAN_GLOBAL_FLAGS-$default_global}"
    read -r -a engine_run_extra <<<"${PODMAN_RUN_FLAGS-$default_run}"
else
    engine_cmd=(docker)
    engine_run_extra=()
fi
engine() { "${engine_cmd[@]}" "$@"; }
run_container() { engine run ${engine_run_extra[@]+"${engine_run_extra[@]}"} "$@"; }

# ---------------------------------------------------------------- inputs
[[ -d "${TEST_DIR}/input/images/pet" ]] || die "missing ${TEST_DIR}/input/images/pet (the test case)."
expected_dir="${TEST_DIR}/expected_output/${OUTPUT_SUBDIR}"
compgen -G "${expected_dir}/*.mha" >/dev/null || die "no expected masks in ${expected_dir}."
# The container runs as an unprivileged user: the test input must be world-readable.
if [[ -n "$(find "${TEST_DIR}/input" \( -type f ! -perm -o=r \) -o \( -type d ! -perm -o=rx \) | head -n 1)" ]]; then
    die "some files under ${TEST_DIR}/input are not world-readable; the container's user cannot read them
(fix with: chmod -R a+rX ${TEST_DIR}/input)."
fi

# ---------------------------------------------------------------- image
if ! engine image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image ${IMAGE} not found; building it."
    ENGINE="$ENGINE" IMAGE_NAME="$IMAGE_NAME" VERSION="$VERSION" ./build.sh
fi

# ---------------------------------------------------------------- GPU
gpu_args=()
have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi
case "$GPU" in
    0) ;;
    1 | auto)
        if [[ "$have_gpu" == 1 ]]; then
            if [[ "$ENGINE" == docker ]]; then gpu_args=(--gpus all); else gpu_args=(--device nvidia.com/gpu=all); fi
        elif [[ "$GPU" == 1 ]]; then
            die "GPU=1 but nvidia-smi finds no GPU."
        fi
        ;;
    *) die "GPU must be auto, 0 or 1 (got '$GPU')." ;;
esac

# ---------------------------------------------------------------- run
volume="${IMAGE_NAME//[^a-zA-Z0-9_.-]/-}-output-$(date +%s)-$$"
cleanup() { engine volume rm -f "$volume" >/dev/null 2>&1 || true; }
trap cleanup EXIT
engine volume create "$volume" >/dev/null

run_args=(
    --rm
    --network none
    --cap-drop ALL
    --security-opt no-new-privileges
    --memory "$MEMORY" --memory-swap "$MEMORY"
    --pids-limit 256
    --shm-size "$SHM_SIZE"
    ${gpu_args[@]+"${gpu_args[@]}"}
    -v "${TEST_DIR}/input:/input:ro"
    -v "${volume}:/output"
)
if [[ "$READ_ONLY" == 1 ]]; then
    # 2g of tmpfs is plenty for scratch files; it counts against --memory only when used.
    run_args+=(--read-only --tmpfs "/tmp:rw,exec,nosuid,size=2g,mode=1777")
fi

log "running ${IMAGE} with ${ENGINE}: GPU=$([[ ${#gpu_args[@]} -gt 0 ]] && echo yes || echo no), shm ${SHM_SIZE}, memory ${MEMORY}, read-only root=${READ_ONLY}"
start=$SECONDS
status=0
run_container "${run_args[@]}" "$IMAGE" "$@" || status=$?
elapsed=$((SECONDS - start))
if [[ "$status" -ne 0 ]]; then
    log "FAIL: the container exited with status ${status} after ${elapsed}s."
    [[ "$status" -eq 137 ]] && log "(137 = killed, usually out of memory under --memory ${MEMORY})"
    exit 1
fi
log "container finished in ${elapsed}s."

if [[ -n "${KEEP_OUTPUT:-}" ]]; then
    mkdir -p "$KEEP_OUTPUT"
    run_container --rm --network none -v "${volume}:/output:ro" --entrypoint tar "$IMAGE" -C /output -cf - . \
        | tar -C "$KEEP_OUTPUT" -xf -
    log "output copied to ${KEEP_OUTPUT}"
fi

# ---------------------------------------------------------------- compare
# Inside the image, so the host needs neither SimpleITK nor numpy.
status=0
run_container --rm --network none --cap-drop ALL --security-opt no-new-privileges \
    -v "${volume}:/output:ro" \
    -v "${TEST_DIR}/expected_output:/expected:ro" \
    -v "${HERE}/scripts/compare_masks.py:/opt/compare/compare_masks.py:ro" \
    -e PYTHONPATH=/opt/app --entrypoint python "$IMAGE" /opt/compare/compare_masks.py \
    "/output/${OUTPUT_SUBDIR}" "/expected/${OUTPUT_SUBDIR}" \
    --min-dice "$MIN_DICE" --results-json /output/results.json || status=$?

if [[ "$status" -ne 0 ]]; then
    log "FAIL: the output of ${IMAGE} does not match ${TEST_DIR}/expected_output (see above)."
    log "Contents of /output:"
    run_container --rm --network none -v "${volume}:/output:ro" --entrypoint find "$IMAGE" /output -ls >&2 || true
    exit 1
fi
log "PASS: ${IMAGE} reproduces ${TEST_DIR}/expected_output (Dice >= ${MIN_DICE}, same geometry) in ${elapsed}s."

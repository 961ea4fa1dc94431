# Grand-Challenge algorithm container: autoPET II whole-body FDG-PET/CT lesion
# segmentation with a sliding-window DynUNet ensemble.
#
# torch comes from the base image and is never replaced by pip. The default base
# is the official PyTorch runtime image for the project's torch pin; its CUDA
# 12.6 build includes kernels for sm_75 (the challenge's T4). On a machine that
# cannot reach Docker Hub, build a stand-in with scripts/build_standin_base.sh
# and pass it as BASE_IMAGE (see docs/container.md).
ARG BASE_IMAGE=docker.io/pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# Everything the code might cache or write at run time goes to /tmp, the only
# writable scratch space besides /output in the challenge's runtime. No Python
# bytecode is written next to the (root-owned, read-only) code.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    TORCH_HOME=/tmp/.cache/torch \
    MPLCONFIGDIR=/tmp/.config/matplotlib \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Unprivileged user the algorithm runs as. /input and /output belong to it so a
# fresh named volume mounted on /output (which copies the image's ownership) is
# writable, as in the organisers' test script.
# A fixed numeric id (not 1000, which Ubuntu-based images may already use) lets
# USER be numeric, so the runtime never has to resolve the name.
ARG APP_UID=1001
RUN groupadd -g "${APP_UID}" user \
    && useradd -m --no-log-init -u "${APP_UID}" -g user user \
    && mkdir -p /opt/app /input /output \
    && chown user:user /input /output

WORKDIR /opt/app

# Runtime dependencies, pinned in requirements.txt. The constraint pins torch to
# exactly the version already in the base image, so pip either keeps it or fails;
# the check afterwards makes sure it really is the same torch.
# PIP_CERT / PIP_INDEX_URL / PIP_EXTRA_INDEX_URL are optional build arguments for
# builds behind a proxy or a private index; they are not kept in the image's env.
ARG PIP_CERT=
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
COPY requirements.txt /opt/app/requirements.txt
RUN set -eu; \
    [ -n "${PIP_CERT:-}" ] || unset PIP_CERT; \
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL; \
    torch_version="$(python -c 'import torch; print(torch.__version__)')"; \
    printf 'torch==%s\n' "$torch_version" > /tmp/torch-constraint.txt; \
    PIP_BREAK_SYSTEM_PACKAGES=1 python -m pip install --no-cache-dir \
        -r /opt/app/requirements.txt -c /tmp/torch-constraint.txt; \
    rm -f /tmp/torch-constraint.txt; \
    test "$(python -c 'import torch; print(torch.__version__)')" = "$torch_version"; \
    python -c 'import torch, monai, SimpleITK, evalutils, numpy, scipy, cc3d, matplotlib, pydicom, highdicom; print("torch", torch.__version__, "cuda", torch.version.cuda, "monai", monai.__version__)'

# Code and baked-in weights (root-owned, read-only for the user).
# the packages process.py imports (tests/test_layering.py checks the list against its imports)
COPY common/ /opt/app/common/
COPY model/ /opt/app/model/
COPY lesion_report/ /opt/app/lesion_report/
COPY runner/ /opt/app/runner/
COPY weights/ /opt/app/weights/
COPY process.py /opt/app/process.py

# Last, so a new version does not invalidate the cached layers above.
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="autopet-sw-unet" \
      org.opencontainers.image.description="autoPET II FDG-PET/CT lesion segmentation (sliding-window DynUNet ensemble)" \
      org.opencontainers.image.version="${VERSION}"

USER ${APP_UID}:${APP_UID}

# Fail the build, not the first run, if the user cannot read the code or weights
# (COPY keeps the modes of the build context; checkpoints saved via mkstemp are 0600).
RUN unreadable="$(find /opt/app ! -readable)"; \
    if [ -n "$unreadable" ]; then \
        echo "not readable by the runtime user (run chmod -R a+rX on the build context):"; \
        echo "$unreadable"; exit 1; \
    fi

ENTRYPOINT ["python", "/opt/app/process.py"]

# syntax=docker/dockerfile:1
#
# The model image: the base set plus the `ml` extra (torch, torchvision, transformers,
# grad-cam) for the classify and gradcam workers, and Flower. The shipped detector
# checkpoint (common/detector/weights/) is package data, so installing the package
# bakes it in. The torch wheels carry their CUDA libraries; the host needs the NVIDIA
# driver and the container toolkit.
#
#   docker build -f infra/docker/worker.Dockerfile -t aigi-worker .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY common ./common
COPY services ./services
ARG FLOWER_VERSION=2.2.0
ARG EXTRA_PACKAGES=""
RUN pip install --upgrade pip setuptools wheel \
    && pip install -c requirements.lock ".[ml]" "flower==${FLOWER_VERSION}" ${EXTRA_PACKAGES}

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/var/lib/aigi/hf \
    MPLCONFIGDIR=/tmp/matplotlib
# tini forwards SIGTERM to the Celery main process only (not the pool children), which
# starts Celery's warm shutdown: running tasks finish, nothing new is taken.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aigi \
    && useradd --system --uid 10001 --gid aigi --create-home --home-dir /home/aigi aigi \
    && mkdir -p /var/lib/aigi/blobs /var/lib/aigi/hf /models \
    && chown -R aigi:aigi /var/lib/aigi /models
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/aigi
USER 10001:10001
STOPSIGNAL SIGTERM
# Ping the Celery node(s) of this container. The services name their node
# `<stage>@<hostname>` (`aigi worker <stage> --hostname <stage>@%h`); compose and
# Kubernetes give each worker a precise `-d <stage>@$HOSTNAME` check of its own.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD celery -A services.worker inspect ping --timeout 10 --json | grep -q "@$(hostname)\"" || exit 1
ENTRYPOINT ["tini", "--"]
CMD ["aigi", "worker", "classify", "--hostname", "classify@%h"]

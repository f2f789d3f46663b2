# syntax=docker/dockerfile:1
#
# The base image: the project's base dependency set only, never torch.
# It runs the gateway, `aigi migrate`, `aigi scheduler` and the explain and notify
# workers (they import no model code).
#
#   docker build -f infra/docker/gateway.Dockerfile -t aigi-gateway .
#
# Optional packages (for example boto3 for AIGI_BLOB_STORE=s3):
#   --build-arg EXTRA_PACKAGES="boto3==1.40.0"
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
ARG EXTRA_PACKAGES=""
# The lock is used as constraints: versions are pinned, but only what `.` needs is
# installed. The last step fails the build if torch got in anyway.
RUN pip install --upgrade pip setuptools wheel \
    && pip install -c requirements.lock . ${EXTRA_PACKAGES} \
    && if pip show torch >/dev/null 2>&1; then echo "torch must not be in this image" >&2; exit 1; fi

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
# tini as PID 1: forwards SIGTERM to the process and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aigi \
    && useradd --system --uid 10001 --gid aigi --create-home --home-dir /home/aigi aigi \
    && mkdir -p /var/lib/aigi/blobs \
    && chown -R aigi:aigi /var/lib/aigi
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/aigi
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--"]
CMD ["aigi", "gateway", "--host", "0.0.0.0", "--port", "8000"]

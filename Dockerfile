# syntax=docker/dockerfile:1
# The kubetune operator image.
#   docker build -t ghcr.io/kubetune/operator:0.1.0 .
# Runs as uid 10001 with a read-only root filesystem: everything is installed and byte-compiled
# at build time, and the only writable path it needs is /tmp (the chart mounts an emptyDir).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kubetune
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kubetune ./kubetune
COPY operator ./operator
# A regular (non-editable) install: pip byte-compiles every module now, so nothing is written
# next to the code at run time.
# [dashboard]: the chart's dashboard.enabled runs `kubetune dashboard --cluster` from this image
RUN /opt/kubetune/bin/pip install ".[operator,dashboard]"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 kubetune \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin kubetune
COPY --from=build /opt/kubetune /opt/kubetune
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# Numeric user, so `runAsNonRoot: true` can be verified by the kubelet.
USER 10001:10001
# 8080: kopf's liveness endpoint (/healthz); 9090: Prometheus (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["kubetune-operator"]

# syntax=docker/dockerfile:1
# kubetune operator image. Build context: the repository root.
#   docker build -t kubetune-operator:0.1.0 .
# Base pinned by tag and digest (python:3.11.11-slim-bookworm, linux/amd64 + arm64 index).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/kubetune
WORKDIR /src
# The wheel build needs every package listed in pyproject.toml, not only the operator's.
COPY pyproject.toml README.md ./
COPY kubetune_api ./kubetune_api
COPY kubetune_cli ./kubetune_cli
COPY kubetune_dev ./kubetune_dev
COPY crds ./crds
COPY trainer_image/kubetune_trainer ./trainer_image/kubetune_trainer
COPY operator/kubetune_operator ./operator/kubetune_operator
RUN /opt/kubetune/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubetune-operator" \
      org.opencontainers.image.description="Kopf operator for FineTuneJob and ContinuousPretrain" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/kubetune /opt/kubetune
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
# Numeric so the kubelet can verify runAsNonRoot; the chart runs it with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["python", "-m", "kubetune_operator"]

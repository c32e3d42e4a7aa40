# syntax=docker/dockerfile:1.7
# tusou model-export image: the Python export tooling from
# model_repository/export with its pinned requirements. Run once (compose
# service model-export, Kubernetes Job components/export); it writes a
# complete Triton model repository to /models (deploy/docker/export-entrypoint.sh).
# Build from the repository root:
#   docker build -f deploy/docker/export.Dockerfile -t tusou/export:dev .

# Python 3.11: the version the export tooling is developed and tested with.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/tusou
# Requirements first, so code changes do not reinstall torch.
COPY model_repository/export/requirements.txt model_repository/export/requirements.txt
# PyPI's Linux torch wheel is the CUDA build (~6 GB with its nvidia-* wheels).
# Where the PyTorch CPU index is reachable, pass
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# and pip takes the same pinned version's +cpu wheel (a few hundred MB).
ARG TORCH_INDEX_URL=
RUN if [ -n "$TORCH_INDEX_URL" ]; then set -- --extra-index-url "$TORCH_INDEX_URL"; fi; \
    pip install --no-cache-dir "$@" -r model_repository/export/requirements.txt
COPY model_repository/ model_repository/
COPY deploy/docker/export-entrypoint.sh deploy/docker/triton_cpu_config.py bin/
# SOURCE_DIGEST names the exporter + configs revision, so the entrypoint can
# tell an up-to-date repository from one made by an older image. /models and
# /cache are owned by the runtime user so fresh Docker volumes mounted there
# inherit that ownership.
RUN set -eu; \
    find model_repository -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16 > SOURCE_DIGEST; \
    mkdir -p /models /cache; \
    chown 65532:65532 /models /cache
USER 65532:65532
ENV HOME=/tmp \
    HF_HOME=/cache/huggingface \
    PYTHONPATH=/opt/tusou/model_repository/export \
    MODEL_REPO_OUT=/models
ENTRYPOINT ["/opt/tusou/bin/export-entrypoint.sh"]

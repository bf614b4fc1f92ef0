# The pipeline image: `ser pipeline run` (ingest → validate → split → features → train → evaluate → ONNX export →
# registry), PyTorch on CPU.
#
# Build (from the repository root):
#   docker build -f docker/pipeline.Dockerfile -t ser-pipeline .
# Run (the workdir volume then holds the registry the service image reads with SER_WORKDIR):
#   docker run --rm -v $PWD/runs:/runs -v $PWD/../shared/data:/data:ro ser-pipeline \
#       --config /etc/ser/pipeline.yaml      # (mount a config; no arguments: the synthetic demo corpus)
# As a Cloud Run job or a Vertex AI custom training job, data may be read from gs:// (data.path) and, when
# $AIP_MODEL_DIR is set, the registered model folder is also copied there (docs/deploy.md).

FROM python:3.11-slim
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_VERSION=26.3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ser \
    && useradd --system --uid 10001 --gid ser --home-dir /home/ser --create-home --shell /usr/sbin/nologin ser \
    && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index and pinned: from PyPI an open range would pull a multi-GB CUDA build.
RUN pip install "pip==${PIP_VERSION}" \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# ser itself, from the copied source (DL3013 asks for a version pin, which a local path cannot have); `scale`: Ray
# (`ser batch --ray`, `train.executor: ray`, the image of deploy/k8s's RayCluster) and gcsfs (gs:// data, and
# $AIP_MODEL_DIR on Vertex AI / Cloud Run jobs).
# hadolint ignore=DL3013
RUN pip install ".[ml,pipeline,scale]" \
    && python -c "import torch; assert not torch.version.cuda, torch.version.cuda"

RUN mkdir -p /runs && chown ser:ser /runs
ENV PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    SER_WORKDIR=/runs
USER 10001:10001
WORKDIR /home/ser
VOLUME ["/runs"]
ENTRYPOINT ["ser", "pipeline", "run"]
CMD []

# The service image: `ser serve` (FastAPI + uvicorn + onnxruntime). No PyTorch: only the `serve` extra is installed.
#
# Build (from the repository root):
#   docker build -f docker/service.Dockerfile -t ser-service .
#   # bake a model folder (model.onnx + metadata.json) into the image:
#   docker build -f docker/service.Dockerfile --build-arg MODEL_DIR=runs/registry/ser-emotion/3 -t ser-service .
# Run:
#   docker run -p 8000:8000 ser-service                                    # the baked model
#   docker run -p 8000:8000 -v $PWD/m:/models/m:ro -e SER_MODEL_DIR=/models/m ser-service
#   docker run -p 8000:8000 -v $PWD/runs:/runs:ro -e SER_WORKDIR=/runs ser-service --reload-poll 10
# Extra arguments go to `ser serve` (e.g. --api-key, --workers, --reload-poll); SER_* variables work as well.
#
# Dependencies come from docker/service.requirements.txt, locked with hashes (scripts/lock_service.sh regenerates
# it): pip installs exactly those files (--require-hashes) and then ser itself without resolving anything.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/service.requirements.txt ./
RUN pip install --require-hashes --no-deps -r service.requirements.txt
COPY pyproject.toml README.md ./
COPY src ./src
# ser itself from the copied source, no dependency resolved (DL3013 asks for a version pin a local path cannot have)
# hadolint ignore=DL3013
RUN pip install --no-deps --no-build-isolation ".[serve]" \
    && pip check \
    && ! pip show torch >/dev/null 2>&1

# ---------------------------------------------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ser \
    && useradd --system --uid 10001 --gid ser --home-dir /home/ser --create-home --shell /usr/sbin/nologin ser \
    && mkdir -p /runs /monitor && chown ser:ser /runs /monitor
COPY --from=build /opt/venv /opt/venv

# A model folder baked in at build time (default: an empty placeholder; mount one or set SER_WORKDIR instead).
ARG MODEL_DIR=docker/no-model
COPY --chown=root:root ${MODEL_DIR}/ /opt/ser/model/
COPY --chmod=0755 docker/service-entrypoint.sh /usr/local/bin/ser-entrypoint

# One request per core (onnxruntime runs 1 thread per request): keep BLAS (the log-mel projection) to one thread
# too; its default of one thread per core oversubscribes the cores and doubles the per-clip time under load.
ENV OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    SER_BAKED_MODEL_DIR=/opt/ser/model
USER 10001:10001
WORKDIR /home/ser
# 8000 unless the platform names another port: SER_PORT, AIP_HTTP_PORT (Vertex AI, 8080), PORT (Cloud Run). The health
# check finds it in the same order as ser.serve.platform.listen_port (not imported: a probe every 15 s should not
# load the package; tests/deploy/test_ops.py checks the two orders agree).
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = next((os.environ[k].strip() for k in ('SER_PORT', 'AIP_HTTP_PORT', 'PORT') if os.environ.get(k, '').strip()), '8000'); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
ENTRYPOINT ["/usr/local/bin/ser-entrypoint"]
CMD []

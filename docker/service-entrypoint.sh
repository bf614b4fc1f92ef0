#!/bin/sh
# Entry point of the service image: `ser serve --host 0.0.0.0` over the model the environment (or the arguments)
# name. Order: --model / --workdir arguments, then SER_MODEL_DIR / SER_WORKDIR, then the folder baked in at build
# time (SER_BAKED_MODEL_DIR). Extra arguments go to `ser serve`. The port is `ser serve`'s to choose (--port, else
# SER_PORT, AIP_HTTP_PORT on Vertex AI, PORT on Cloud Run, else 8000: ser.serve.platform.listen_port).
set -eu

has_source_arg=no
for arg in "$@"; do
    case "$arg" in
        --model | --model=* | --workdir | --workdir=*) has_source_arg=yes ;;
    esac
done

if [ "$has_source_arg" = no ] && [ -z "${SER_MODEL_DIR:-}" ] && [ -z "${SER_WORKDIR:-}" ]; then
    baked="${SER_BAKED_MODEL_DIR:-/opt/ser/model}"
    if [ -f "$baked/metadata.json" ] && [ -f "$baked/model.onnx" ]; then
        SER_MODEL_DIR="$baked"
        export SER_MODEL_DIR
    else
        echo "error: no model: mount a model folder and set SER_MODEL_DIR, mount a pipeline workdir and set" \
            "SER_WORKDIR, or build the image with --build-arg MODEL_DIR=<model folder>" >&2
        exit 2
    fi
fi

exec ser serve --host "${SER_HOST:-0.0.0.0}" --log-level "${SER_LOG_LEVEL:-info}" "$@"

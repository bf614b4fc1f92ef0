#!/usr/bin/env bash
# The Airflow DAG checks: tests_airflow/ (DagBag import, task wiring, dag.test() runs of both DAGs) with pytest
# from their own environment, .venv-airflow. Airflow pins its own fastapi / sqlalchemy / pydantic ranges, which
# need not match the service's, so it never goes into .venv.
#
#   bash scripts/airflow_ci.sh            # build .venv-airflow when needed, then run the checks
#   bash scripts/airflow_ci.sh -k dagbag  # extra arguments go to pytest
#
# Idempotent: the install runs only when .venv-airflow is missing or a pin or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VENV=.venv-airflow
BIN=$VENV/bin
TORCH_VERSION=2.13.0     # first and pinned: an open range would pull a multi-GB CUDA build
AIRFLOW_VERSION=3.3.2    # resolves with the project's ml + pipeline extras (mlflow 3.17, sqlalchemy 2.1, pydantic 2)
STAMP=$VENV/.installed
WANT="torch==$TORCH_VERSION apache-airflow==$AIRFLOW_VERSION pyproject=$(sha256sum pyproject.toml | cut -c1-16)"

pip_install() {
    # pip's own noise about this machine's local index folders hides the lines that matter
    local rc=0
    "$BIN/pip" install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; } || rc=$?
    return "$rc"
}

if [[ ! -x $BIN/python || ! -f $STAMP || "$(cat "$STAMP")" != "$WANT" ]]; then
    t0=$SECONDS
    test -x "$BIN/python" || "$PY" -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"  # keeps the venv out of git status (python < 3.13 does not write one)
    rm -f "$STAMP"
    pip_install --upgrade pip
    pip_install "torch==$TORCH_VERSION"
    pip_install "apache-airflow==$AIRFLOW_VERSION"
    # the project and its extras, with Airflow and torch held where they are
    pip_install "apache-airflow==$AIRFLOW_VERSION" "torch==$TORCH_VERSION" -e ".[ml,pipeline]" "pytest>=8"
    "$BIN/pip" check
    echo "$WANT" > "$STAMP"
    echo "airflow_ci: $VENV installed in $((SECONDS - t0)) s"
fi
# (importing airflow here would create ~/airflow: ask the package metadata instead)
"$BIN/python" -c "from importlib.metadata import version as v; print('apache-airflow', v('apache-airflow'), \
'| task-sdk', v('apache-airflow-task-sdk'), '| torch', v('torch'))"

# lint the DAG code with the project's ruff when .venv has it (the Makefile's lint covers src, tests, benchmarks)
if [[ -x .venv/bin/ruff ]]; then
    .venv/bin/ruff check dags tests_airflow
    .venv/bin/ruff format --check dags tests_airflow
fi

t0=$SECONDS
"$BIN/python" -m pytest -q tests_airflow "$@"
echo "airflow_ci: DAG checks took $((SECONDS - t0)) s"

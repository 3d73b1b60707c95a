#!/usr/bin/env bash
# the GPU path measured by one prepared check (bench/gpu_check.py has the rows and options).
# run from the repository root:  bash bench/gpu_check.sh [ARGS of bench/gpu_check.py]
# environment: GPU_CHECK_THREADS (default: half the CPU cores, 1 to 8: a 2-core machine shared
# with other jobs runs torch 5 to 10 times slower on 2 threads than on 1), GPU_CHECK_LIMIT_S (time
# for every step, default 230), GPU_CHECK_PYTHON (the interpreter; default the project's venv
# through `uv run --no-sync`, which installs nothing, else python3), GPU_CHECK_WHEELS (a folder
# of wheels of the project's own dependencies that the interpreter lacks, e.g. anndata and
# scanpy on a machine whose image has torch only: installed from that folder alone, no index,
# into a temporary folder put on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${GPU_CHECK_THREADS:-$(($(nproc) / 2))}"
if [ "$threads" -lt 1 ]; then threads=1; fi
if [ "$threads" -gt 8 ]; then threads=8; fi
limit="${GPU_CHECK_LIMIT_S:-230}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    python=("$GPU_CHECK_PYTHON")
elif command -v uv >/dev/null 2>&1 && [ -x .venv/bin/python ]; then
    python=(uv run --no-sync python)
else
    python=(python3)
fi

if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
    site="${TMPDIR:-/tmp}/gpu_check_site"
    "${python[@]}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" "$GPU_CHECK_WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

# the script keeps to its limit and names a step that overruns; timeout is the backstop
exec timeout --kill-after=10 "$((limit + 30))" \
    "${python[@]}" bench/gpu_check.py --threads "$threads" --limit-s "$limit" "$@"

"""What the benchmark scripts share about their child processes: the environment that caps a
child's BLAS / OpenMP threads, the peak RSS a child reports, and the result line a child prints on
stdout for its parent to read back.

Used by bench_training (and bench_workflow through it), bench_panel and gpu_check; bench_scale
uses ``peak_rss_mb`` (its children have a protocol of their own). bench_panel measures its peak
RSS otherwise (``panel_fit.peak_rss_mb``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child_env(threads: int) -> dict[str, str]:
    """This process's environment with a child's BLAS / OpenMP pools capped at ``threads`` and
    its stdout unbuffered."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def peak_rss_mb() -> float:
    """This process's peak RSS from ``ru_maxrss`` (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_result(prefix: str, result: Any) -> None:
    """The line a child's parent reads back: ``prefix``, then ``result`` as JSON."""
    print(prefix + json.dumps(result), flush=True)


def parse_result(stdout: str, prefix: str, *, echo: bool = False) -> Any:
    """The JSON of the last line of a child's ``stdout`` that starts with ``prefix``, None when
    there is none; with ``echo`` the other non-empty lines go on to stderr so none is lost."""
    last = None
    for line in stdout.splitlines():
        if line.startswith(prefix):
            last = line
        elif echo and line.strip():
            print(line, file=sys.stderr)
    return None if last is None else json.loads(last[len(prefix) :])


def run_for_result(cmd: list[Any], threads: int, prefix: str) -> tuple[Any, int]:
    """Run ``cmd`` in the repository root under ``child_env(threads)``, its stderr passed
    through: ``(its result or None, its exit status)``, its other stdout lines echoed."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(threads),
        cwd=ROOT,
        check=False,
    )
    return parse_result(proc.stdout, prefix, echo=True), proc.returncode

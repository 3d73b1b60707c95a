"""gpu_check's parent side of a child process: the check's settings (``Check``), a failed step
(``StepFailed``), and running children within the time left, their output appended to
``<out>/log.txt`` and their ``RESULT_PREFIX`` line read back (``run_child``, ``run_children``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _child
from bench.gpu_check_children import DENSITY, GENES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"  # the entry point: it runs the children (--child)
RESULT_PREFIX = "GPU_CHECK_RESULT "


class StepFailed(Exception):
    """A step that failed, with the rows it still has for the table."""

    def __init__(self, step: str, reason: str, rows: list[dict] | None = None) -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason, self.rows = step, reason, rows or []


@dataclass(frozen=True)
class Check:
    """What every step needs: the interpreter, folders, threads, the deadline and the sizes."""

    python: str
    out: Path
    work: Path
    threads: int
    deadline: float
    cuda: bool
    cells: int
    cpu_epochs: int | None
    data: Path
    scvi_skip: str | None  # why scvi-tools is left out, or None

    @property
    def log(self) -> Path:
        return self.out / "log.txt"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def pre(self) -> Path:
        return self.work / "pbmc3k_preprocessed.h5ad"

    @property
    def synthetic(self) -> Path:
        # bench_scale's cache name; no compression: written and read faster than gzip
        return self.work / f"cells_{self.cells}_{GENES}_{DENSITY}_none.h5ad"


def child_cmd(check: Check, kind: str, *extra: Any) -> list[str]:
    cmd = [check.python, str(SCRIPT), "--child", kind]
    return [*cmd, "--threads", str(check.threads), *(str(e) for e in extra)]


def child_env(threads: int) -> dict[str, str]:
    return {**_child.child_env(threads), "PYTHONHASHSEED": "0"}


def append_log(check: Check, step: str, text: str) -> None:
    with check.log.open("a") as log:
        log.write(f"\n===== {step} =====\n{text}")


def run_logged(check: Check, step: str, cmd: list[str]) -> tuple[str, int]:
    """Run ``cmd`` within the time left, its output appended to ``<out>/log.txt``."""
    timeout = check.remaining() - 3
    if timeout < 5:
        raise StepFailed(step, "not started: the time limit is reached")
    print(f"[gpu_check] {step} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(check.threads),
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output or ""
        append_log(check, step, out if isinstance(out, str) else out.decode(errors="replace"))
        raise StepFailed(step, f"timed out after {timeout:.0f} s (log {check.log})") from None
    append_log(check, step, proc.stdout)
    print(f"[gpu_check] {step}: {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    return proc.stdout, proc.returncode


def run_child(check: Check, step: str, kind: str, *extra: Any) -> dict[str, Any]:
    """A child's result, or StepFailed with the end of its output."""
    out, rc = run_logged(check, step, child_cmd(check, kind, *extra))
    result = _child.parse_result(out, RESULT_PREFIX)
    if rc != 0 or result is None:
        tail = "\n".join(out.splitlines()[-15:])
        raise StepFailed(step, f"exit status {rc}:\n{tail}")
    return result


def run_children(check: Check, kind: str, children: list, row: Callable) -> list[dict]:
    """A child of ``kind`` per ``(step, extra args)``, each turned into a table row by ``row``;
    every child runs even when one fails, then one StepFailed names the failed steps."""
    rows, failed = [], []
    for step, extra in children:
        try:
            rows.append(row(run_child(check, step, kind, *extra)))
        except StepFailed as exc:
            failed.append(exc)
    if failed:
        raise StepFailed(", ".join(e.step for e in failed), failed[0].reason, rows)
    return rows

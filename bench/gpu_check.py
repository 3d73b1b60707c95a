"""The GPU path measured by one prepared check: the CUDA tests, PBMC 3k trained to the end, the
synthetic scale epochs and scvi-tools beside ours, printed as one markdown table.

    bash bench/gpu_check.sh [ARGS]     # the wrapper: threads, interpreter, time limit
    python bench/gpu_check.py [--data RAW.h5ad] [--cells N] [--cpu-epochs N] [--threads N]
        [--limit-s 230] [--out results/gpu_check] [--work results/gpu_check/work] [--skip-scvi]

Rows (the table is also written to ``<out>/table.md``, every row as JSON to ``<out>/rows.json``
and every step's output to ``<out>/log.txt``; the data it makes, the synthetic counts cached for
the next run, stay in ``--work``):

- ``CUDA tests``: ``pytest -q -n 0 -m cuda tests/unit/test_cuda.py`` (device choice from the
  machine profile, training with autocast on and off, a checkpoint moved between GPU and CPU, the
  memory plan on the GPU, an epoch without host-device syncs): passed / failed / skipped (all
  skipped without CUDA; skipped tests with CUDA present are a failure).
- ``PBMC 3k``: the raw counts preprocessed once by the preprocess stage's function, then our
  model (config/default.yaml, the epochs of the machine profile) trained in one process per
  setting: on CUDA with autocast (bf16) on and off, and on the CPU. Seconds per epoch and to a
  trained model (the fit: imports and loading excluded), the kNN (k=15) 5-fold macro F1 on
  ``cell_type_coarse`` and the classifier head's macro F1 on the cells whose label it did not
  see, as bench/bench_training.py scores them. With CUDA the CPU row trains ``--cpu-epochs``
  (20) epochs: its seconds to a model are its seconds per epoch times the default epochs, and
  its F1 is that of the shorter run (the row says so).
- ``synthetic``: bench/bench_scale.py's counts, ``--cells`` x 2,000 genes (1M with CUDA, 20k
  without; the row names the size), two epochs with the matrix on the device (``dense``: in
  VRAM, or in RAM on the CPU) and streamed from CSR in RAM (``sparse``), the memory plan steered
  by the limits it is given; seconds of the second epoch, training cells per second, peak VRAM
  (``torch.cuda.max_memory_allocated``) and peak RSS of the process.
- ``scvi-tools``: SCVI (its defaults: batch size 128) for one epoch on the same device and data
  (PBMC 3k, then the synthetic cells), timed by an epoch callback (the trainer's set-up left
  out), as the ratio of its epoch to ours; skipped with a note where scvi-tools is not
  importable (the optional extra ``bench``).

Without CUDA the check prints ``no CUDA GPU: CPU rows only``. A failing step is marked in its row
and the check exits 1 naming it; the documented skips are no failure. Every step keeps to the
time left of ``--limit-s``. The synthetic counts are written in the background while the first
steps run (1M cells take one CPU core about two minutes) and stay cached in ``--work``.

On a device machine whose Python has torch but not the project's data stack, give the wrapper a
folder of wheels and a copy of the raw counts inside the checkout, and write the table where it
comes back from:

    GPU_CHECK_WHEELS=DIR bash bench/gpu_check.sh --data results/gpu_data/pbmc3k_raw.h5ad \
        --out "$OUT"

This file holds the command line, the whole check and its table; the children (``--child``) are
in ``bench/gpu_check_children.py``, running them in ``bench/gpu_check_runner.py`` and the steps
in ``bench/gpu_check_steps.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# after the path above: the bench modules import as bench.<name>
from bench._child import print_result  # noqa: E402
from bench.gpu_check_children import CHILDREN  # noqa: E402
from bench.gpu_check_runner import RESULT_PREFIX, Check  # noqa: E402
from bench.gpu_check_steps import run_steps, threads  # noqa: E402

NO_CUDA_LINE = "no CUDA GPU: CPU rows only"
PBMC_RAW = Path("shared") / "data" / "pbmc3k" / "pbmc3k_raw.h5ad"
CELLS_CUDA, CELLS_CPU = 1_000_000, 20_000
CPU_EPOCHS_WITH_CUDA = 20
COLUMNS = (
    ("check", "check"),
    ("device", "device"),
    ("setting", "setting"),
    ("s_epoch", "s/epoch"),
    ("s_model", "s to model"),
    ("cells_s", "cells/s"),
    ("knn_f1", "kNN F1"),
    ("head_f1", "head F1"),
    ("vram_gb", "peak VRAM GB"),
    ("rss_gb", "peak RSS GB"),
    ("note", "note"),
)


def format_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = (str(row.get(key, "")).replace("|", "/") for key, _ in COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_line(check: Check, rows: list[dict], wall: float) -> str:
    devices = [r["raw"] for r in rows if r.get("raw", {}).get("device") == "cuda"]
    facts = devices[0] if devices else next((r["raw"] for r in rows if "raw" in r), {})
    name = facts.get("device_name", "CPU" if not check.cuda else "CUDA (no row ran)")
    return (
        f"{name}; torch {facts.get('torch', '?')}; {threads(check.threads)}; Python "
        f"{sys.version.split()[0]}; whole check {wall:.0f} s"
    )


def default_data() -> Path:
    """PBMC 3k's raw counts: ``shared/`` in the checkout (what travels to a device machine),
    else the one beside it."""
    candidates = [ROOT / PBMC_RAW, ROOT.parent / PBMC_RAW]
    return next((p for p in candidates if p.exists()), candidates[-1])


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()  # asks NVML: no CUDA context in this process


def scvi_skip(asked: bool) -> str | None:
    if asked:
        return "--skip-scvi"
    if importlib.util.find_spec("scvi") is None:
        return "scvi-tools is not importable (the optional extra bench)"
    return None


def make_check(args: argparse.Namespace) -> Check:
    cuda = cuda_available()
    # absolute: the children run in the repository root
    out, work = args.out.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.txt").write_text("")
    return Check(
        python=sys.executable,
        out=out,
        work=work,
        threads=args.threads,
        deadline=time.monotonic() + args.limit_s,
        cuda=cuda,
        cells=args.cells or (CELLS_CUDA if cuda else CELLS_CPU),
        cpu_epochs=args.cpu_epochs or (CPU_EPOCHS_WITH_CUDA if cuda else None),
        data=args.data.resolve(),
        scvi_skip=scvi_skip(args.skip_scvi),
    )


def run_check(args: argparse.Namespace) -> int:
    start = time.monotonic()
    check = make_check(args)
    if not check.cuda:
        print(NO_CUDA_LINE, flush=True)
    rows, failures = run_steps(check)
    text = f"{machine_line(check, rows, time.monotonic() - start)}\n\n{format_table(rows)}\n"
    print("\n" + text)
    (check.out / "table.md").write_text(text)
    (check.out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
    if failures:
        for exc in failures:
            print(f"gpu_check: step '{exc.step}' failed: {exc.reason}", file=sys.stderr)
        print(f"gpu_check: FAILED: {', '.join(e.step for e in failures)}", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="PBMC 3k raw h5ad")
    parser.add_argument("--out", type=Path, default=Path("results") / "gpu_check")
    parser.add_argument("--work", type=Path, default=Path("results") / "gpu_check" / "work")
    parser.add_argument("--cells", type=int, help=f"synthetic cells ({CELLS_CUDA:,} with CUDA)")
    parser.add_argument("--cpu-epochs", type=int, help="epochs of the CPU PBMC row")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument("--limit-s", type=float, default=230.0, help="time for every step")
    parser.add_argument("--skip-scvi", action="store_true", help="leave scvi-tools out")
    # internal: one measurement in a child process
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--pre", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--autocast", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layout", choices=("dense", "sparse"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is None:
        return run_check(args)
    result = CHILDREN[args.child](args)
    print_result(RESULT_PREFIX, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULT_PREFIX = "GPU_CHECK_RESULT "
NO_CUDA_LINE = "no CUDA GPU: CPU rows only"
PBMC_RAW = Path("shared") / "data" / "pbmc3k" / "pbmc3k_raw.h5ad"
LABEL_KEY = "cell_type_coarse"
GENES, DENSITY = 2000, 0.1
CELLS_CUDA, CELLS_CPU = 1_000_000, 20_000
CPU_EPOCHS_WITH_CUDA = 20
SCALE_EPOCHS = 2
STREAM_VRAM_FRACTION = 1e-6  # of the VRAM for the data: the dense matrix does not fit
RAM_MARGIN = 1.05
GIB = 1 << 30
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


# --- children: one measurement per process (peak memory per process, no leaked settings) -----


def machine_profile(device: str, threads: int) -> Any:
    """config.yml (its template where the machine has none) with this check's threads and the
    GPU's memory on CUDA, none on the CPU (what a CPU machine's profile says)."""
    from src.app.machine import load_machine_profile

    path = ROOT / "config.yml"
    profile = load_machine_profile(path if path.exists() else ROOT / "config.yml.example")
    vram = 0.0
    if device == "cuda":
        import torch

        vram = torch.cuda.get_device_properties(0).total_memory / GIB
    return dataclasses.replace(profile, annotation_threads=threads, gpu_vram_gb=vram)


def device_facts(device: str) -> dict[str, Any]:
    """Peak VRAM (GiB) and the device's name, after a sync."""
    import torch

    if device != "cuda":
        return {"peak_vram_gb": None, "device_name": "CPU", "torch": torch.__version__}
    torch.cuda.synchronize()
    return {
        "peak_vram_gb": torch.cuda.max_memory_allocated() / GIB,
        "device_name": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
    }


def pbmc_config(device: str) -> Any:
    """config/default.yaml on ``device``, scored on the coarse labels only."""
    from bench import bench_training

    cfg = bench_training.load_cfg()
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, device=device),
        eval=dataclasses.replace(cfg.eval, label_keys=(LABEL_KEY,)),
    )


def child_pbmc(args: argparse.Namespace) -> dict[str, Any]:
    """Train our model on the preprocessed PBMC 3k and score it as bench_training does."""
    from bench import bench_training
    from src.app.core.model.runtime import runtime_for

    cfg = pbmc_config(args.device)
    runtime = runtime_for(cfg, profile=machine_profile(args.device, args.threads))
    rule_autocast, default_epochs = runtime.autocast, runtime.epochs
    runtime = dataclasses.replace(
        runtime,
        autocast=args.autocast and args.device == "cuda",
        epochs=args.epochs or runtime.epochs,
    )
    data, history, seconds, latent, predicted = bench_training.fit_ours(cfg, runtime, args.pre)
    f1 = bench_training.f1_table(latent, data.obs, cfg)[LABEL_KEY]
    return bench_training.result_row(
        "ours",
        seconds,
        len(history),
        device=runtime.device,
        autocast=runtime.autocast,
        rule_autocast=rule_autocast,
        default_epochs=default_epochs,
        batch_size=runtime.batch_size,
        threads=runtime.threads,
        knn_f1=f1["knn"],
        head_f1=bench_training.joint_f1(data.obs, predicted, cfg),
        peak_rss_mb=bench_training.peak_rss_mb(),
        **device_facts(runtime.device),
    )


def layout_limits(layout: str, runtime: Any, path: Path) -> dict[str, float]:
    """``max_ram_gb`` and ``gpu_memory_fraction`` that make the memory plan choose ``layout``
    (``dense`` or ``sparse``) for the matrix in ``path``, from the plan's own size estimates."""
    from src.app.core.data.h5ad import StoredMatrix
    from src.app.core.data.row_store import DATA_MEMORY_SHARE, device_memory, plan_memory

    stored = StoredMatrix.open(path, "X", what="synthetic data")
    plan = plan_memory(
        n_cells=stored.shape[0],
        n_genes=stored.shape[1],
        nnz=stored.nnz,
        runtime=runtime,
        vram_bytes=device_memory(runtime),
    )
    both = (plan.dense_bytes + plan.sparse_bytes) / DATA_MEMORY_SHARE / GIB * RAM_MARGIN
    limits = {"max_ram_gb": max(runtime.max_ram_gb, both)}
    if layout == "sparse" and runtime.device == "cuda":
        limits["gpu_memory_fraction"] = STREAM_VRAM_FRACTION
    elif layout == "sparse":
        # room for the CSR and half the dense matrix: the CSR fits, the two together do not
        half = plan.sparse_bytes + plan.dense_bytes // 2
        limits["max_ram_gb"] = half / DATA_MEMORY_SHARE / GIB
    return limits


def child_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Two epochs on the synthetic counts with the matrix where ``args.layout`` says."""
    from bench import bench_scale
    from src.app.config import config_from_dict
    from src.app.core.data_adapter import DataAdapter
    from src.app.core.model.runtime import runtime_for
    from src.app.core.model_adapter import ModelAdapter

    cfg = config_from_dict(
        {
            "data": {"labels": None},
            "train": {"epochs": SCALE_EPOCHS, "device": args.device},
            "annotation": {"pseudo_labels": False},  # no kNN graph over 1M cells mid-run
        }
    )
    runtime = runtime_for(cfg, profile=machine_profile(args.device, args.threads))
    runtime = dataclasses.replace(runtime, **layout_limits(args.layout, runtime, args.path))
    start = time.perf_counter()
    data = DataAdapter(cfg, runtime=runtime, path=args.path)
    loaded = time.perf_counter()
    if data.layout != args.layout:
        raise SystemExit(f"the memory plan chose {data.layout}, not {args.layout}")
    history = ModelAdapter(cfg, runtime=runtime).fit(data)
    epoch_s = history[-1]["seconds"]
    n_train = data.dataset_info()["n_train"]
    return {
        "n_cells": data.n_cells,
        "device": runtime.device,
        "layout": data.layout,
        "plan": data.plan.describe(),
        "batch_size": runtime.batch_size,
        "threads": runtime.threads,
        "load_s": loaded - start,
        "fit_s": time.perf_counter() - loaded,
        "epoch_s": epoch_s,
        "cells_per_s": n_train / epoch_s,
        "train_loss": history[-1]["train_loss"],
        "peak_rss_mb": bench_scale.peak_rss_mb(),
        **device_facts(runtime.device),
    }


def scvi_epoch(adata: Any, device: str) -> float:
    """Seconds of one SCVI training epoch (its defaults) on ``adata``'s counts layer, timed by
    a callback from the epoch's start to its end."""
    import scvi
    from lightning.pytorch import Callback

    from src.app.core.data.preprocess import COUNTS_LAYER

    class EpochTimer(Callback):
        def on_train_epoch_start(self, *_: Any) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *_: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    scvi.model.SCVI.setup_anndata(adata, layer=COUNTS_LAYER)
    timer = EpochTimer()
    scvi.model.SCVI(adata).train(
        max_epochs=1,
        accelerator="gpu" if device == "cuda" else "cpu",
        callbacks=[timer],
        enable_progress_bar=False,
    )
    return timer.seconds


def child_scvi(args: argparse.Namespace) -> dict[str, Any]:
    """One SCVI epoch on the preprocessed PBMC 3k and on the synthetic counts."""
    import anndata as ad
    import scvi
    import torch

    torch.set_num_threads(args.threads)
    scvi.settings.seed = 0
    seconds = {}
    for name, path in (("pbmc", args.pre), ("synthetic", args.path)):
        if path is not None:
            seconds[name] = scvi_epoch(ad.read_h5ad(path), args.device)
    return {"version": scvi.__version__, "epoch_s": seconds, "device": args.device}


def child_prep(args: argparse.Namespace) -> dict[str, Any]:
    from bench import bench_training

    start = time.perf_counter()
    n_cells, n_genes = bench_training.preprocess_to(args.data, args.pre)
    return {"n_cells": n_cells, "n_genes": n_genes, "seconds": time.perf_counter() - start}


def child_write(args: argparse.Namespace) -> dict[str, Any]:
    from bench import bench_scale

    start = time.perf_counter()
    bench_scale.write_synthetic(
        args.path, n_cells=args.cells, n_genes=GENES, density=DENSITY, compression=None, seed=0
    )
    return {"seconds": time.perf_counter() - start}


CHILDREN = {
    "pbmc": child_pbmc,
    "scale": child_scale,
    "scvi": child_scvi,
    "prep": child_prep,
    "write": child_write,
}


# --- parent: the steps --------------------------------------------------------------------------


def child_cmd(check: Check, kind: str, *extra: Any) -> list[str]:
    cmd = [check.python, str(Path(__file__).resolve()), "--child", kind]
    return [*cmd, "--threads", str(check.threads), *(str(e) for e in extra)]


def child_env(threads: int) -> dict[str, str]:
    from bench import bench_training

    return {**bench_training.child_env(threads), "PYTHONHASHSEED": "0"}


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
    results = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
    if rc != 0 or not results:
        tail = "\n".join(out.splitlines()[-15:])
        raise StepFailed(step, f"exit status {rc}:\n{tail}")
    return json.loads(results[-1][len(RESULT_PREFIX) :])


def step_cuda_tests(check: Check) -> list[dict]:
    cmd = [check.python, "-m", "pytest", "-q", "-n", "0", "-m", "cuda", "tests/unit/test_cuda.py"]
    out, rc = run_logged(check, "CUDA tests", cmd)
    counts = dict.fromkeys(("passed", "failed", "skipped", "error"), 0)
    summary = [line for line in out.splitlines() if re.search(r" in [\d.]+s", line)]
    for n, kind in re.findall(
        r"(\d+) (passed|failed|skipped|error)", summary[-1] if summary else ""
    ):
        counts[kind] += int(n)
    text = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    row = {"check": "CUDA tests", "device": "cuda", "setting": "pytest -m cuda", "note": text}
    if rc != 0 or counts["failed"] or counts["error"] or not any(counts.values()):
        raise StepFailed("CUDA tests", f"pytest exit status {rc}: {text}", [row])
    if check.cuda and counts["skipped"]:
        raise StepFailed("CUDA tests", f"skipped although CUDA is present: {text}", [row])
    return [row]


def step_prep(check: Check) -> list[dict]:
    if not check.data.exists():
        raise StepFailed("PBMC 3k preprocess", f"raw counts {check.data} not found (--data)")
    result = run_child(
        check, "PBMC 3k preprocess", "prep", "--data", check.data, "--pre", check.pre
    )
    print(
        f"[gpu_check] PBMC 3k: {result['n_cells']} cells x {result['n_genes']} genes after the "
        f"preprocess stage ({result['seconds']:.1f} s)",
        file=sys.stderr,
    )
    return []


def pbmc_row(r: dict[str, Any]) -> dict[str, Any]:
    short = r["epochs"] < r["default_epochs"]
    s_model = (
        r["seconds_per_epoch"] * r["default_epochs"] if short else r["seconds_to_trained_model"]
    )
    note = f"{r['epochs']} epochs, batch {r['batch_size']}, {threads(r['threads'])}"
    if r["device"] == "cuda":
        note += f"; autocast by the config.yml rule: {'on' if r['rule_autocast'] else 'off'}"
    if short:
        note += (
            f"; s to model = s/epoch x {r['default_epochs']} (extrapolated), "
            f"F1 after {r['epochs']} epochs"
        )
    return {
        "check": "PBMC 3k",
        "device": r["device"],
        "setting": f"autocast {'on' if r['autocast'] else 'off'}",
        "s_epoch": f"{r['seconds_per_epoch']:.3f}",
        "s_model": f"{s_model:.1f}",
        "knn_f1": f"{r['knn_f1']:.3f}",
        "head_f1": f"{r['head_f1']:.3f}",
        "vram_gb": gb(r["peak_vram_gb"]),
        "rss_gb": gb(r["peak_rss_mb"] / 1024),
        "note": note,
        "raw": r,
    }


def step_pbmc(check: Check) -> list[dict]:
    """One child per setting; a failed setting does not stop the others."""
    if not check.pre.exists():
        raise StepFailed("PBMC 3k", "no preprocessed data: the preprocess step failed")
    settings = [("cuda", 1), ("cuda", 0), ("cpu", 0)] if check.cuda else [("cpu", 0)]
    children = []
    for device, autocast in settings:
        epochs = check.cpu_epochs if device == "cpu" else None
        extra = ["--pre", check.pre, "--device", device, "--autocast", autocast]
        extra += ["--epochs", epochs] if epochs else []
        children.append((f"PBMC 3k {device} autocast {'on' if autocast else 'off'}", extra))
    return run_children(check, "pbmc", children, pbmc_row)


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


def threads(n: int) -> str:
    return f"{n} thread{'' if n == 1 else 's'}"


def gb(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def size_label(n_cells: int) -> str:
    return f"{n_cells // 1_000_000}M" if n_cells % 1_000_000 == 0 else f"{n_cells // 1000}k"


def start_writer(check: Check) -> subprocess.Popen | None:
    """Write the synthetic counts in the background (the other steps run meanwhile), unless an
    earlier run left them."""
    if check.synthetic.exists():
        return None
    cmd = child_cmd(check, "write", "--cells", check.cells, "--path", check.synthetic)
    with (check.work / "synthetic_write.log").open("w") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(1), cwd=ROOT
        )


def wait_writer(check: Check, writer: subprocess.Popen | None) -> None:
    step = f"synthetic {size_label(check.cells)} write"
    if writer is None:
        return
    try:
        rc = writer.wait(timeout=max(check.remaining() - 3, 1))
    except subprocess.TimeoutExpired:
        writer.kill()
        writer.wait()
        raise StepFailed(step, "timed out") from None
    log = (check.work / "synthetic_write.log").read_text()
    append_log(check, step, log)
    if rc != 0 or not check.synthetic.exists():
        raise StepFailed(step, f"exit status {rc}:\n" + "\n".join(log.splitlines()[-15:]))
    result = [line for line in log.splitlines() if line.startswith(RESULT_PREFIX)]
    seconds = json.loads(result[-1][len(RESULT_PREFIX) :])["seconds"] if result else float("nan")
    print(f"[gpu_check] {step}: {seconds:.1f} s (in the background)", file=sys.stderr)


def scale_row(r: dict[str, Any]) -> dict[str, Any]:
    where = "CSR in RAM, streamed"
    if r["layout"] == "dense":
        where = "in VRAM" if r["device"] == "cuda" else "in RAM"
    return {
        "check": f"synthetic {size_label(r['n_cells'])} x {GENES:,}",
        "device": r["device"],
        "setting": f"{r['layout']}: {where}",
        "s_epoch": f"{r['epoch_s']:.2f}",
        "cells_s": f"{r['cells_per_s']:,.0f}",
        "vram_gb": gb(r["peak_vram_gb"]),
        "rss_gb": gb(r["peak_rss_mb"] / 1024),
        "note": (
            f"epoch {SCALE_EPOCHS} of {SCALE_EPOCHS} (validation included), batch "
            f"{r['batch_size']}, {threads(r['threads'])}; load {r['load_s']:.1f} s, fit "
            f"{r['fit_s']:.1f} s (gene moments + {SCALE_EPOCHS} epochs)"
        ),
        "raw": r,
    }


def step_scale(check: Check, writer: subprocess.Popen | None) -> list[dict]:
    wait_writer(check, writer)
    device = "cuda" if check.cuda else "cpu"
    children = [
        (
            f"synthetic {size_label(check.cells)} {device} {layout}",
            ["--path", check.synthetic, "--device", device, "--layout", layout],
        )
        for layout in ("dense", "sparse")
    ]
    return run_children(check, "scale", children, scale_row)


def ours_epoch(rows: list[dict], check_prefix: str, device: str) -> float | None:
    """Our seconds per epoch of the row the config.yml rules pick: autocast as the rule says,
    the matrix where the memory plan puts it by default (dense)."""
    for row in rows:
        raw = row.get("raw", {})
        if not row["check"].startswith(check_prefix) or raw.get("device") != device:
            continue
        if raw.get("layout", "dense") == "dense" and raw.get("autocast") == raw.get(
            "rule_autocast"
        ):
            return raw.get("epoch_s", raw.get("seconds_per_epoch"))
    return None


def step_scvi(check: Check, rows: list[dict]) -> list[dict]:
    device = "cuda" if check.cuda else "cpu"
    names = {"pbmc": "PBMC 3k", "synthetic": f"synthetic {size_label(check.cells)} x {GENES:,}"}
    base = {"device": device, "setting": "SCVI, 1 epoch"}
    if check.scvi_skip is not None:
        note = f"skipped: {check.scvi_skip}"
        return [{**base, "check": f"scvi-tools {name}", "note": note} for name in names.values()]
    extra = ["--device", device]
    extra += ["--pre", check.pre] if check.pre.exists() else []
    extra += ["--path", check.synthetic] if check.synthetic.exists() else []
    if len(extra) == 2:
        raise StepFailed("scvi-tools", "no data: the PBMC 3k and synthetic steps failed")
    result = run_child(check, "scvi-tools", "scvi", *extra)
    out = []
    for key, seconds in result["epoch_s"].items():
        ours = ours_epoch(rows, names[key].split(" x ")[0], device)
        ratio = f"{seconds / ours:.1f}x ours per epoch" if ours else "ours: no row"
        out.append(
            {
                **base,
                "check": f"scvi-tools {names[key]}",
                "s_epoch": f"{seconds:.2f}",
                "note": f"scvi-tools {result['version']}, batch 128; {ratio}",
            }
        )
    return out


# --- parent: the whole check --------------------------------------------------------------------


def run_steps(check: Check) -> tuple[list[dict], list[StepFailed]]:
    """Every step in order; a failed step leaves its rows and a FAILED row and the rest go on."""
    rows: list[dict] = []
    failures: list[StepFailed] = []
    writer = start_writer(check)
    steps = (
        ("CUDA tests", lambda: step_cuda_tests(check)),
        ("PBMC 3k preprocess", lambda: step_prep(check)),
        ("PBMC 3k", lambda: step_pbmc(check)),
        ("synthetic", lambda: step_scale(check, writer)),
        ("scvi-tools", lambda: step_scvi(check, rows)),
    )
    try:
        for name, step in steps:
            try:
                rows += step()
            except StepFailed as exc:
                failures.append(exc)
            except Exception as exc:  # a bug here still leaves the table of the other steps
                failures.append(StepFailed(name, f"internal error: {exc!r}"))
            else:
                continue
            failed = failures[-1]
            note = failed.reason.splitlines()[0]
            rows += [*failed.rows, {"check": failed.step, "setting": "FAILED", "note": note}]
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
    return rows, failures


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
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""gpu_check's steps, run in order by ``run_steps``: the CUDA tests, PBMC 3k preprocessed and
trained per setting, the synthetic counts (written in the background) trained dense and sparse,
and scvi-tools beside ours; each turns its children's results into rows of the table.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from bench._child import parse_result
from bench.gpu_check_children import GENES, SCALE_EPOCHS
from bench.gpu_check_runner import (
    RESULT_PREFIX,
    ROOT,
    Check,
    StepFailed,
    append_log,
    child_cmd,
    child_env,
    run_child,
    run_children,
    run_logged,
)


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
    result = parse_result(log, RESULT_PREFIX)
    seconds = result["seconds"] if result is not None else float("nan")
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

"""The panel benchmark: ours, scvi-tools SCVI and the scanpy PCA route (+ Harmony) on the same cells.

For PBMC 3k and every data set of ``../shared/data/panel`` the raw counts go through the project's
preprocess stage (default config; ``data.batch_key`` and the label keys of the set). Then, for each
seed, each method fits in its own child process (its peak RSS is that child's own) and leaves a
latent in the cache ``results/bench_panel/<set>/<method>_seed<k>.npz`` (+ ``.json``: timing, peak
RSS and the key it was made under), reused on a rerun unless ``--fresh``:

- ``ours``: the train and embed stages (``src.app.stages``) with the default config;
- ``scvi``: scvi-tools' ``SCVI`` with its defaults on the counts layer of the same cells and genes
  (``batch_key`` where the set has batches);
- ``pca``: the project's PCA baseline, and ``harmony`` on it where the set has batches.

Every latent is scored with the project's evaluation functions: kNN (k=15) and logistic-regression
5-fold macro F1 per label key; on batch sets also the scIB aggregates and the cross-batch transfer
macro F1 (``src.app.core.evaluate.batch``). One markdown table of the mean and SD over the seeds
goes to stdout and ``results/bench_panel/table.md``.

    uv run python bench/bench_panel.py [--sets pbmc3k ...] [--seeds 0 1 2]
        [--methods ours scvi pca] [--fresh] [--epochs-scvi N] [--threads N] [--smoke]

``--smoke``: 1 seed, 2 epochs for both models, every set, cached under results/bench_panel/smoke.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # run as a script from anywhere: the package lives at the repo root
    sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "results" / "bench_panel"
METHODS = ("ours", "scvi", "pca")
ROWS = ("ours", "scvi", "pca", "harmony")  # pca's child also writes harmony on batch sets
RESULT_PREFIX = "BENCH_PANEL_RESULT "
# the code a latent of ours depends on besides its config: what the workflow's train rule reads
OURS_CODE = (
    "src/app/core/data",
    "src/app/core/model",
    "src/app/core/data_adapter.py",
    "src/app/core/model_adapter.py",
    "src/app/core/train.py",
)
PCA_CODE = ("src/app/core/evaluate/baseline.py",)


@dataclasses.dataclass(frozen=True)
class PanelSet:
    path: Path
    label_keys: tuple[str, ...]
    batch_key: str | None = None
    transfer: tuple[str, str] | None = None  # (.obs column, its visible reference value)


SETS = {
    "pbmc3k": PanelSet(DATA / "pbmc3k" / "pbmc3k_raw.h5ad", ("cell_type_coarse", "cell_type")),
    "zheng_facs": PanelSet(DATA / "panel" / "zheng_facs.h5ad", ("label_coarse", "label")),
    "kang_ifnb_muscat": PanelSet(
        DATA / "panel" / "kang_ifnb_muscat.h5ad", ("label",), "batch", ("condition", "ctrl")
    ),
    "cellbench": PanelSet(
        DATA / "panel" / "cellbench.h5ad", ("label",), "batch", ("technology", "CEL-seq2")
    ),
}


# --- config, hashes and the cache -------------------------------------------------------------


def set_config(name: str, seed: int, epochs: int | None) -> Any:
    """The default config with only the data set's keys, the seed (and ``epochs``) changed."""
    from src.app.config import load_config

    panel = SETS[name]
    cfg = load_config(ROOT / "config" / "default.yaml")
    eval_changes: dict[str, Any] = {"label_keys": panel.label_keys}
    eval_fields = {f.name for f in dataclasses.fields(cfg.eval)}
    if panel.transfer is not None and {"transfer_key", "transfer_reference"} <= eval_fields:
        eval_changes.update(transfer_key=panel.transfer[0], transfer_reference=panel.transfer[1:])
    cfg = dataclasses.replace(
        cfg,
        seed=seed,
        data=dataclasses.replace(cfg.data, source=str(panel.path), batch_key=panel.batch_key),
        eval=dataclasses.replace(cfg.eval, **eval_changes),
        annotation=dataclasses.replace(cfg.annotation, label_key=panel.label_keys[0]),
    )
    if epochs is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
    return cfg


def bench_profile(cfg: Any, threads: int | None) -> Any:
    """The machine profile (its template where the machine has none) with ``threads``."""
    from src.app.machine import load_machine_profile

    path = ROOT / cfg.paths.machine_profile
    profile = load_machine_profile(path if path.exists() else ROOT / "config.yml.example")
    if threads is None:
        return profile
    return dataclasses.replace(profile, annotation_threads=threads)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash(paths: tuple[str, ...]) -> str:
    """One hash of the Python files under ``paths`` (files or folders, relative to the root)."""
    h = hashlib.sha256()
    for rel in paths:
        top = ROOT / rel
        for file in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
            h.update(str(file.relative_to(ROOT)).encode() + file.read_bytes())
    return h.hexdigest()[:16]


def cells_hash(adata: Any) -> str:
    """The cells and genes of a preprocessed file (what scvi and pca see), not its split."""
    return digest([list(map(str, adata.obs_names)), list(map(str, adata.var_names))])


def cache_paths(folder: Path, method: str, seed: int) -> tuple[Path, Path]:
    return folder / f"{method}_seed{seed}.npz", folder / f"{method}_seed{seed}.json"


def cached(folder: Path, method: str, seed: int, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record of (method, seed) when it was made under ``key``, else None."""
    npz, meta = cache_paths(folder, method, seed)
    if not (npz.exists() and meta.exists()):
        return None
    record = json.loads(meta.read_text())
    return record if record.get("key") == key else None


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM of /proc/self/status, in kB). ``ru_maxrss`` of a
    child started by fork + exec also counts the parent's peak at the fork, so it is not used
    where /proc is available."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- children: one fit each --------------------------------------------------------------------


def fit_ours(args: argparse.Namespace) -> dict[str, Any]:
    """The train stage (timed: seconds to a trained model), then the embed stage. The modules
    the stage imports are imported first, so the time leaves imports out as scvi's does."""
    import anndata  # noqa: F401
    import safetensors.torch  # noqa: F401

    import src.app.core.train  # noqa: F401
    from src.app import stages

    cfg = set_config(args.set, args.seed, args.epochs_ours)
    profile = bench_profile(cfg, args.threads)
    work = Path(args.pre).parent
    model_dir, latent = work / f"model_seed{args.seed}", work / f"latent_seed{args.seed}.npy"
    start = time.perf_counter()
    result = stages.train(cfg, input=args.pre, model_dir=model_dir, profile=profile)
    seconds = time.perf_counter() - start
    rss = peak_rss_mb()
    stages.embed(
        cfg, model_dir=model_dir, input=args.pre, latent=latent,
        output=work / f"embedded_seed{args.seed}.h5ad", profile=profile,
    )  # fmt: skip
    extra = {"fit_seconds": result["seconds"], "device": result["device"]}
    return {"ours": (np.load(latent), seconds, int(result["epochs"]), rss, extra)}


def fit_scvi(args: argparse.Namespace) -> dict[str, Any]:
    """scvi-tools' SCVI, its defaults; timed from setup_anndata to the end of training."""
    import anndata as ad
    import scvi
    import torch

    from src.app.core.data.preprocess import COUNTS_LAYER
    from src.app.machine import resolve_runtime

    cfg = set_config(args.set, args.seed, None)
    runtime = resolve_runtime(
        bench_profile(cfg, args.threads), cfg.train, cuda_available=torch.cuda.is_available()
    )
    scvi.settings.seed = args.seed
    torch.set_num_threads(runtime.threads)
    adata = ad.read_h5ad(args.pre)
    kwargs: dict[str, Any] = {"accelerator": "gpu" if runtime.device == "cuda" else "cpu"}
    if args.epochs_scvi is not None:
        kwargs["max_epochs"] = args.epochs_scvi
    start = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata, layer=COUNTS_LAYER, batch_key=SETS[args.set].batch_key)
    model = scvi.model.SCVI(adata)
    model.train(**kwargs)
    seconds = time.perf_counter() - start
    rss = peak_rss_mb()
    latent = model.get_latent_representation()
    epochs = len(model.history["elbo_train"])
    extra = {"device": runtime.device, "version": scvi.__version__}
    return {"scvi": (latent, seconds, epochs, rss, extra)}


def fit_pca(args: argparse.Namespace) -> dict[str, Any]:
    """The PCA baseline of the log-normalised HVGs, then Harmony on it where there are batches
    (its seconds include the PCA's)."""
    import anndata as ad

    from src.app.core.evaluate import baseline
    from src.app.stages import dense_budget

    cfg = set_config(args.set, args.seed, None)
    profile = bench_profile(cfg, args.threads)
    adata = ad.read_h5ad(args.pre)
    start = time.perf_counter()
    pca = baseline.pca_representation(
        adata.X, cfg.baseline, seed=args.seed, max_bytes=dense_budget(profile)
    )
    seconds = time.perf_counter() - start
    out = {"pca": (pca, seconds, 0, peak_rss_mb(), {})}
    batch_key = SETS[args.set].batch_key
    if batch_key is not None and hasattr(baseline, "harmony"):
        corrected = baseline.harmony(pca, adata.obs[batch_key].to_numpy(), seed=args.seed)
        out["harmony"] = (corrected, time.perf_counter() - start, 0, peak_rss_mb(), {})
    return out


def run_one(args: argparse.Namespace) -> None:
    """Child mode: fit one method, write its latents (the parent writes the records)."""
    fit = {"ours": fit_ours, "scvi": fit_scvi, "pca": fit_pca}[args.one]
    rows = {}
    for method, (latent, seconds, epochs, rss, extra) in fit(args).items():
        npz, _ = cache_paths(Path(args.folder), method, args.seed)
        np.savez_compressed(npz, latent=np.asarray(latent, dtype=np.float32))
        rows[method] = {"seconds": seconds, "epochs": epochs, "peak_rss_mb": rss, **extra}
    print(RESULT_PREFIX + json.dumps(rows), flush=True)


# --- parent: preprocess, fit what is not cached, score, tabulate --------------------------------


def preprocess_seed(name: str, seed: int, folder: Path, threads: int | None) -> tuple[Path, Any]:
    """The preprocess stage on the set's raw counts for ``seed`` (the split is seeded); returns
    the file and its AnnData (backed: ``.obs`` and names only)."""
    import anndata as ad

    from src.app import stages

    cfg = set_config(name, seed, None)
    out = folder / "work" / f"preprocessed_seed{seed}.h5ad"
    out.parent.mkdir(parents=True, exist_ok=True)
    stages.preprocess(cfg, input=SETS[name].path, output=out, profile=bench_profile(cfg, threads))
    return out, ad.read_h5ad(out, backed="r")


def cache_keys(name: str, seed: int, cells: str, args: argparse.Namespace) -> dict[str, dict]:
    """What each method's cached latent must have been made under to be reused."""
    from src.app.config import config_to_dict

    cfg = set_config(name, seed, args.epochs_ours)
    try:
        from src.app.core.evaluate.baseline import harmony  # noqa: F401
    except ImportError:
        has_harmony = False
    else:
        has_harmony = SETS[name].batch_key is not None
    profile = bench_profile(cfg, args.threads)
    common = {"cells": cells, "threads": profile.annotation_threads}
    # the profile's tunables that resolve ours' null config keys
    tunables = [profile.batch_size, profile.learning_rate, profile.max_epochs, profile.gpu_vram_gb]
    return {
        "ours": {
            **common,
            "config": digest(config_to_dict(cfg)),
            "profile": digest(tunables),
            "code": code_hash(OURS_CODE),
        },
        "scvi": {
            **common,
            "batch_key": SETS[name].batch_key,
            "epochs": args.epochs_scvi,
            "version": importlib.metadata.version("scvi-tools"),
        },
        "pca": {
            **common,
            "baseline": digest(config_to_dict(cfg)["baseline"]),
            "code": code_hash(PCA_CODE),
            "harmony": has_harmony,
        },
    }


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_child(method: str, name: str, seed: int, pre: Path, args: argparse.Namespace) -> dict:
    """One fit in a child process; returns its rows by method (pca: pca and harmony)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", method, "--set", name]
    cmd += ["--seed", str(seed), "--pre", str(pre), "--folder", str(pre.parent.parent)]
    for flag in ("epochs_ours", "epochs_scvi", "threads"):
        if getattr(args, flag) is not None:
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    cfg = set_config(name, seed, None)
    threads = bench_profile(cfg, args.threads).annotation_threads
    print(f"[bench_panel] {name} seed {seed}: fitting {method} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, text=True, env=child_env(threads), cwd=ROOT, check=False
    )
    rows = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            rows = json.loads(line[len(RESULT_PREFIX) :])
        elif line.strip():
            print(line, file=sys.stderr)
    if proc.returncode != 0 or rows is None:
        raise RuntimeError(f"{method} on {name} seed {seed} failed (exit status {proc.returncode})")
    return rows


def ensure_fits(name: str, seed: int, args: argparse.Namespace, folder: Path) -> tuple:
    """Fit every method of ``args.methods`` not cached for (set, seed); returns the obs and the
    latent and record of each method (harmony with pca's) made under the current keys."""
    pre, adata = preprocess_seed(name, seed, folder, args.threads)
    keys = cache_keys(name, seed, cells_hash(adata), args)
    obs = adata.obs.copy()
    adata.file.close()
    for method in args.methods:
        if not args.fresh and cached(folder, method, seed, keys[method]) is not None:
            continue
        for row_method in ("pca", "harmony") if method == "pca" else (method,):
            cache_paths(folder, row_method, seed)[1].unlink(missing_ok=True)
        rows = run_child(method, name, seed, pre, args)
        for row_method, row in rows.items():
            record = {"method": row_method, "set": name, "seed": seed, "key": keys[method], **row}
            cache_paths(folder, row_method, seed)[1].write_text(json.dumps(record, indent=1))
    latents = {}
    for method in args.methods:
        for row_method in ("pca", "harmony") if method == "pca" else (method,):
            record = cached(folder, row_method, seed, keys[method])
            if record is not None:
                latent = np.load(cache_paths(folder, row_method, seed)[0])["latent"]
                latents[row_method] = (latent, record)
    return obs, latents


# --- scoring -------------------------------------------------------------------------------------


def label_scores(latent: np.ndarray, obs: Any, cfg: Any, seed: int) -> dict[str, dict]:
    """kNN and logistic-regression k-fold macro F1 per label key (the evaluate stage's code)."""
    from threadpoolctl import threadpool_limits

    from src.app.core.evaluate.classify import METHODS as EVAL_METHODS
    from src.app.core.evaluate.representation import cross_validated, labelled

    out = {}
    with threadpool_limits(limits=1):  # hundreds of small fits: one thread is fastest
        for key in cfg.eval.label_keys:
            entry = cross_validated(latent, *labelled(obs, key), cfg.eval, seed=seed)
            out[key] = {m: entry[m]["f1_macro"] for m in EVAL_METHODS}
    return out


def batch_module() -> Any:
    """``src.app.core.evaluate.batch`` when it exists (written by another engineer), else None."""
    try:
        from src.app.core.evaluate import batch
    except ImportError:
        return None
    return batch


def score_seed(name: str, seed: int, obs: Any, latents: dict, notes: set[str]) -> dict:
    """Every score of every method's latent of one (set, seed), by method."""
    cfg = set_config(name, seed, None)
    scores = {}
    for method, (latent, record) in latents.items():
        scores[method] = {"f1": label_scores(latent, obs, cfg, seed), "record": record}
    panel = SETS[name]
    if panel.transfer is not None and not hasattr(cfg.eval, "transfer_key"):
        notes.add("eval.transfer_key does not exist yet: ours' head saw labels in every batch")
    if panel.batch_key is None:
        return scores
    batch = batch_module()
    if batch is None:
        notes.add(
            "src.app.core.evaluate.batch does not exist yet: scIB and transfer columns left out"
        )
        return scores
    add_batch_scores(scores, batch, name, latents=latents, obs=obs, seed=seed, notes=notes)
    return scores


def add_batch_scores(
    scores: dict, batch: Any, name: str, *, latents: dict, obs: Any, seed: int, notes: set[str]
) -> None:
    """The scIB aggregates and the cross-batch transfer macro F1 of each method, per label key:
    ``batch_metrics`` with the unintegrated PCA as ``pre_integrated``, ``cross_batch_transfer``
    fitted on the set's reference cells."""
    panel = SETS[name]
    embeddings = {method: latent for method, (latent, _) in latents.items()}
    pre = embeddings.get("pca")
    if pre is None:
        notes.add("scIB without the pca latent (method pca): pcr_comparison left out")
    batches = obs[panel.batch_key].to_numpy()
    for key in panel.label_keys:
        labels = obs[key].astype("object").to_numpy()
        found = batch.batch_metrics(embeddings, labels, batches, pre_integrated=pre, seed=seed)
        for method, entry in found.items():
            scores[method].setdefault("scib", {})[key] = {
                k: v for k, v in entry.items() if v is not None
            }
    column, reference = panel.transfer
    moved = batch.cross_batch_transfer(
        embeddings, obs, label_keys=panel.label_keys, transfer_key=column,
        reference=(reference,), n_neighbors=set_config(name, seed, None).eval.n_neighbors,
        seed=seed,
    )  # fmt: skip
    for key, entry in moved["labels"].items():
        for method in embeddings:
            f1 = {m: entry[method][m]["f1_macro"] for m in entry[method]}
            scores[method].setdefault("transfer", {})[key] = {
                m: v for m, v in f1.items() if v is not None
            }


# --- the table -----------------------------------------------------------------------------------

COLUMNS = {  # column -> (where in a seed's scores, digits)
    "kNN F1": (("f1", "knn"), 3),
    "logreg F1": (("f1", "logreg"), 3),
    "scIB bio": (("scib", "bio_conservation"), 3),
    "scIB batch": (("scib", "batch_correction"), 3),
    "scIB total": (("scib", "total"), 3),
    "transfer kNN F1": (("transfer", "knn"), 3),
    "transfer logreg F1": (("transfer", "logreg"), 3),
}


def column_values(seeds: list[dict], method: str, key: str, where: tuple[str, str]) -> list:
    """One score of ``method`` on label key ``key`` over the seeds that have it."""
    section, name = where
    out = []
    for scores in seeds:
        entry = scores.get(method, {}).get(section, {}).get(key, {})
        if name in entry:
            out.append(entry[name])
    return out


def mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def record_values(seeds: list[dict], method: str, field: str) -> list[float]:
    return [s[method]["record"][field] for s in seeds if method in s]


def table_rows(name: str, seeds: list[dict], columns: list[str]) -> list[list[str]]:
    """The rows of one data set: one per label key and method."""
    rows = []
    ours_s = record_values(seeds, "ours", "seconds")
    for key in SETS[name].label_keys:
        for method in ROWS:
            if not any(method in s for s in seeds):
                continue
            cells = [name, key, method]
            cells += [mean_sd(column_values(seeds, method, key, COLUMNS[c][0]), COLUMNS[c][1])
                      for c in columns]  # fmt: skip
            secs = record_values(seeds, method, "seconds")
            ratio = statistics.fmean(secs) / statistics.fmean(ours_s) if ours_s else None
            cells += [
                mean_sd(secs, 1),
                "-" if ratio is None or method == "ours" else f"{ratio:.1f}x",
                f"{statistics.fmean(record_values(seeds, method, 'peak_rss_mb')):.0f}",
                str(seeds[0][method]["record"]["epochs"] or "-") if method in seeds[0] else "-",
                str(len(secs)),
            ]
            rows.append(cells)
    return rows


def format_table(results: dict[str, list[dict]], header: str) -> str:
    """The markdown table of every data set; scIB / transfer columns only where some set has
    them."""
    columns = [
        c
        for c, (where, _) in COLUMNS.items()
        if any(where[0] in m for seeds in results.values() for s in seeds for m in s.values())
    ]
    names = ["data set", "label key", "method", *columns]
    names += ["s to model", "s vs ours", "peak RSS MB", "epochs", "seeds"]
    lines = [header, "", "| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    for name, seeds in results.items():
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(name, seeds, columns)]
    return "\n".join(lines) + "\n"


def table_header(args: argparse.Namespace, notes: set[str]) -> str:
    profile = bench_profile(set_config(args.sets[0], args.seeds[0], None), args.threads)
    threads = profile.annotation_threads
    epochs_scvi = args.epochs_scvi or "scvi-tools' default"
    text = (
        f"Panel benchmark ({time.strftime('%Y-%m-%d')}): seeds {args.seeds}, mean ± SD (ddof=1) "
        f"over the seeds; threads {threads} for every fit (torch.set_num_threads and "
        f"OMP/MKL/OpenBLAS), {profile.cpu_model} CPU ({profile.logical_cores} logical cores); "
        f"ours: config/default.yaml; scvi: SCVI defaults, max_epochs {epochs_scvi}; pca: the "
        "PCA baseline (harmony: Harmony on it). F1: macro F1, 5-fold stratified CV on the "
        "labelled cells; s to model: ours the train stage call, scvi setup_anndata + model + "
        "train, pca / harmony the PCA (+ Harmony); peak RSS of the fit's own process."
    )
    return "\n".join([text, *[f"Note: {n}." for n in sorted(notes)]])


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--fresh", action="store_true", help="refit even where cached")
    parser.add_argument("--epochs-scvi", type=int, help="SCVI max_epochs (default: its own)")
    parser.add_argument("--epochs-ours", type=int, help="train.epochs (default: the config's)")
    parser.add_argument("--threads", type=int, help="default: config.yml annotation_threads")
    parser.add_argument("--smoke", action="store_true", help="1 seed, 2 epochs each, all sets")
    parser.add_argument("--cache", type=Path, help="cache folder (default results/bench_panel)")
    # internal: a child process fits one method
    for flag in ("--one", "--set", "--pre", "--folder"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs_ours, args.epochs_scvi = [0], 2, 2
    if args.cache is None:
        args.cache = CACHE / "smoke" if args.smoke else CACHE
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one is not None:
        run_one(args)
        return
    start = time.perf_counter()
    notes: set[str] = set()
    results = {}
    for name in args.sets:
        folder = args.cache / name
        results[name] = []
        for seed in args.seeds:
            try:
                obs, latents = ensure_fits(name, seed, args, folder)
                results[name].append(score_seed(name, seed, obs, latents, notes))
            except Exception as exc:  # one failed fit leaves the others' rows; rerun resumes
                print(f"[bench_panel] {name} seed {seed}: {exc}", file=sys.stderr, flush=True)
                notes.add(f"{name} seed {seed} failed ({type(exc).__name__}: {exc})")
    table = format_table(results, table_header(args, notes))
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / "table.md").write_text(table)
    print(table)
    minutes = (time.perf_counter() - start) / 60
    print(f"[bench_panel] {minutes:.1f} min; table in {args.cache / 'table.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""One function per pipeline stage: files in, files out, one core function in between.

The CLI's stage commands call these, and the Snakemake rules call the CLI.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from src.app.config import Config
from src.app.errors import AppError, DataError
from src.app.io_utils import atomic_path, staged_files, write_json
from src.app.machine import MachineProfile
from src.app.stage_io import read_element, read_embedding, read_json

log = logging.getLogger(__name__)

PREPROCESS_HINT = "run the preprocess stage first"


def _write_h5ad(adata: Any, path: str | Path, profile: MachineProfile | None) -> None:
    compression = profile.h5ad_compression if profile is not None else "gzip"
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)


def download(cfg: Config, *, output: str | Path, profile: MachineProfile | None) -> None:
    """Raw counts of ``cfg.data.source`` (labels joined) -> ``output`` (h5ad)."""
    from src.app.core.data.download import acquire

    adata = acquire(cfg.data, resources_dir=cfg.paths.resources)
    log.info("raw data: %d cells x %d genes", adata.n_obs, adata.n_vars)
    _write_h5ad(adata, output, profile)


def preprocess(
    cfg: Config, *, input: str | Path, output: str | Path, profile: MachineProfile | None
) -> None:
    """Raw h5ad -> QC-filtered, normalised HVG h5ad with counts layer and split.

    Fails before writing anything when the raw data is unusable (see ``check_raw_counts``) or
    too few cells pass QC for the split or for ``eval.n_folds``-fold cross-validation.
    """
    from src.app.core.data.h5ad import read_h5ad

    raw = read_h5ad(input, what="raw data", hint="run the download stage first")
    from src.app.core.data.download import check_raw_counts
    from src.app.core.data.preprocess import preprocess as run

    check_raw_counts(raw, where=f"raw data {input}")
    adata = run(raw, cfg.preprocess, seed=cfg.seed, batch_key=cfg.data.batch_key)
    if adata.n_obs < cfg.eval.n_folds:
        raise DataError(
            f"after QC only {adata.n_obs} cells remain; eval.n_folds={cfg.eval.n_folds}-fold "
            "cross-validation needs at least as many; add cells or lower eval.n_folds"
        )
    log.info("preprocessed: %d cells x %d genes", adata.n_obs, adata.n_vars)
    _write_h5ad(adata, output, profile)


def train(
    cfg: Config, *, input: str | Path, model_dir: str | Path, profile: MachineProfile
) -> dict[str, Any]:
    """Preprocessed h5ad -> checkpoint folder; returns the training metrics."""
    from src.app.core.data.h5ad import check_h5ad

    check_h5ad(input, "preprocessed data", PREPROCESS_HINT)  # before the big imports: see h5ad
    from src.app.core.model.runtime import runtime_for
    from src.app.core.train import run_training

    runtime = runtime_for(cfg, profile=profile)
    result = run_training(cfg, data_path=input, model_dir=model_dir, runtime=runtime)
    log.info(
        "trained %d epochs in %.1f s (%.3f s/epoch) on %s; val loss %.3f",
        result["epochs"],
        result["seconds"],
        result["seconds_per_epoch"],
        result["device"],
        result["val_loss"],
    )
    return result


def embed(
    cfg: Config,
    *,
    model_dir: str | Path,
    input: str | Path,
    latent: str | Path,
    output: str | Path,
    profile: MachineProfile,
) -> None:
    """Checkpoint + preprocessed h5ad -> latent .npy and h5ad with ``.obsm["X_vae"]``."""
    from src.app.core.data.h5ad import check_h5ad

    check_h5ad(input, "preprocessed data", PREPROCESS_HINT)
    from src.app.core.model.embed import run_embedding
    from src.app.core.model.runtime import runtime_for

    runtime = runtime_for(cfg, profile=profile)
    z = run_embedding(
        cfg,
        model_dir=model_dir,
        data_path=input,
        latent_out=latent,
        h5ad_out=output,
        runtime=runtime,
    )
    log.info("latent: %d cells x %d dims", *z.shape)


def dense_budget(profile: MachineProfile | None) -> float | None:
    """Bytes a dense cells x genes copy may take (half of ``max_ram_usage_gb``, as the data
    adapter's memory plan allows); None without a machine profile."""
    return None if profile is None else profile.max_ram_usage_gb * 2**30 / 2


def spare_core(profile: MachineProfile | None) -> bool:
    """Whether a stage may run a child process beside its own work (``annotation_threads`` of
    at least 2); never without a machine profile."""
    return profile is not None and profile.annotation_threads >= 2


def evaluate(
    cfg: Config,
    *,
    input: str | Path,
    embedded: str | Path,
    output: str | Path,
    annotated: str | Path,
    profile: MachineProfile | None = None,
) -> dict:
    """Preprocessed h5ad (labels, ``.X`` for the PCA baseline) + the embed stage's latent and
    head predictions -> ``metrics.json`` and ``annotated.h5ad``, from the same fits."""
    from src.app.core.data.h5ad import check_h5ad, write_with_additions

    check_h5ad(input, "preprocess output", PREPROCESS_HINT)
    check_h5ad(embedded, "embed output", "run the embed stage first")
    from src.app.background import beside
    from src.app.core.evaluate.annotate import annotations, latent_umap
    from src.app.core.evaluate.run import evaluate_run, latent_neighbours

    obs = read_element(input, "obs", ".obs", "preprocess")
    latent, cells, head = read_embedding(embedded)
    if list(cells.index) != list(obs.index.astype(str)):
        raise DataError(
            f"{embedded} holds {len(cells)} cells that are not those of {input} ({len(obs)}); "
            "rerun the embed stage on this data"
        )
    obs = obs.join(cells.set_index(obs.index), rsuffix="_embed")
    if head is not None and head[0] not in obs.columns:
        raise DataError(
            f"{embedded} predicts label key {head[0]!r}, which {input} lacks; rerun the embed "
            "stage on this data"
        )
    expression = None
    if cfg.baseline.method != "none":
        expression = read_element(input, "X", "the expression matrix .X", "preprocess")
    neighbours = latent_neighbours(latent, cfg)
    # the UMAP's layout (single-threaded numba) in a child beside the classifier fits
    with beside(latent_umap, latent, neighbours, cfg, parallel=spare_core(profile)) as umap:
        evaluation = evaluate_run(
            latent, obs, cfg, expression=expression, head=head,
            max_bytes=dense_budget(profile), neighbours=neighbours,
        )  # fmt: skip
        added = annotations(latent, obs, evaluation, cfg, carried=tuple(cells.columns), umap=umap())
    with atomic_path(output) as tmp_metrics, atomic_path(annotated) as tmp_annotated:
        write_json(tmp_metrics, evaluation.metrics)
        write_with_additions(
            input, tmp_annotated, obs=added.obs, obsm=added.obsm, obsp=added.obsp, uns=added.uns,
            what="preprocess output",
        )  # fmt: skip
    metrics = evaluation.metrics
    first = cfg.eval.label_keys[0]
    log.info("kNN macro F1 (%s): %.3f", first, metrics["f1_macro"])
    if "baseline_f1_macro" in metrics:
        log.info("PCA baseline kNN macro F1 (%s): %.3f", first, metrics["baseline_f1_macro"])
    if "joint_f1_macro" in metrics:
        log.info("joint classifier macro F1 on hidden labels: %.3f", metrics["joint_f1_macro"])
    log.info("annotated: %d cells -> %s", len(obs), annotated)
    return metrics


def plot(
    cfg: Config,
    *,
    input: str | Path,
    metrics: str | Path,
    model_dir: str | Path,
    output: str | Path,
    profile: MachineProfile | None = None,
) -> list[Path]:
    """annotated.h5ad + metrics.json + the training history -> the figures in folder ``output``
    (umap, confusion, label_efficiency, training_curves .png); returns their paths. Reads and
    draws only: the UMAP here, the figures of metrics.json and the history in a child beside it
    where the machine profile gives a second core."""
    from src.app.checksums import manifest_problem
    from src.app.core.data.h5ad import check_h5ad, reading
    from src.app.layout import FIGURES, figure_path

    results = read_json(metrics, stage="evaluate")
    history_file = Path(model_dir) / "history.json"
    history = read_json(history_file, stage="train")
    problem = manifest_problem(model_dir, (history_file.name,))
    if problem is not None:
        raise DataError(f"checkpoint {model_dir} is damaged: {problem}; rerun the train stage")
    check_h5ad(input, "evaluate output", "run the evaluate stage first")
    import anndata as ad

    from src.app.background import beside
    from src.app.core.plot.run import plot_results, plot_umap

    adata = None
    try:
        with staged_files(output) as tmp:  # all figures or none
            staged = {name: figure_path(tmp, name) for name in FIGURES}
            parallel = spare_core(profile)
            with beside(
                plot_results, results, history, staged, dpi=cfg.viz.dpi, parallel=parallel
            ) as drawn:
                with reading(
                    input, "evaluate output", expected="the evaluate stage's annotated.h5ad"
                ):
                    adata = ad.read_h5ad(input, backed="r")  # .obs, .obsm, .uns; .X stays on disk
                plot_umap(adata, results, staged["umap"], dpi=cfg.viz.dpi)
                drawn()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, AppError):
            raise
        raise DataError(
            f"{metrics}, {history_file} or {input} does not hold what the train and evaluate "
            f"stages write ({type(exc).__name__}: {exc}); rerun them"
        ) from exc
    finally:
        if adata is not None:
            adata.file.close()
    figures = [figure_path(output, name) for name in FIGURES]
    log.info("figures: %s", ", ".join(str(p) for p in figures))
    return figures


def map_query(
    cfg: Config,
    *,
    model_dir: str | Path,
    input: str | Path,
    reference: str | Path,
    reference_raw: str | Path | None,
    output: str | Path,
    metrics: str | Path,
    figure: str | Path,
    refit_dir: str | Path,
    profile: MachineProfile,
) -> None:
    """Checkpoint + preprocessed reference + a query's raw counts -> the query's annotated
    h5ad, its ``metrics`` (where it has the reference's label columns; a stale one is removed
    otherwise), the joint UMAP ``figure`` and, when the model was refit on the shared genes,
    that model in ``refit_dir``. Nothing is written unless everything succeeded."""
    from src.app.core.data.download import check_raw_counts, read_counts
    from src.app.core.data.h5ad import read_h5ad
    from src.app.core.map.run import map_query as run
    from src.app.core.model.runtime import runtime_for
    from src.app.core.plot.run import plot_mapping

    query = read_counts(input)
    check_raw_counts(query, where=f"query {input}")
    ref = read_h5ad(reference, what="preprocessed reference", hint=PREPROCESS_HINT)
    runtime = runtime_for(cfg, profile=profile)
    raw = Path(reference_raw) if reference_raw else None
    mapped = run(
        cfg, model_dir=model_dir, reference=ref, raw_reference=raw, query=query,
        runtime=runtime, where=f"query {input}",
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        tmp_out = stack.enter_context(atomic_path(output))
        tmp_fig = stack.enter_context(atomic_path(figure))
        if mapped.metrics is not None:
            write_json(stack.enter_context(atomic_path(metrics)), mapped.metrics)
        mapped.annotated.write_h5ad(tmp_out, compression=profile.h5ad_compression)
        plot_mapping(mapped.figure, tmp_fig, dpi=cfg.viz.dpi)
    if mapped.metrics is None:
        Path(metrics).unlink(missing_ok=True)
    if mapped.refit is not None:
        mapped.refit.save(refit_dir)
        log.info("the model refit on the shared genes is in %s", refit_dir)
    log.info("annotated query: %s", output)

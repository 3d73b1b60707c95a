import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from src.app.cli import main
from src.app.cli_args import normalise_argv, parse_args
from src.app.layout import FIGURES
from tests.conftest import profile_dict, replace

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        ([], "train"),
        (["--config", "c.yaml"], "train"),
        (["--config", "c.yaml", "eval"], "eval"),
        (["viz", "--output_dir", "x"], "viz"),
        (["--pipeline"], "pipeline"),
        (["--dry_run", "--output_dir", "train"], "train"),
        (["evaluate", "--latent", "l.npy"], "evaluate"),
    ],
)
def test_command_selection(argv, command):
    args = parse_args(argv)
    assert args.command == command


def test_options_before_and_after_command_agree():
    a = parse_args(["--config", "c.yaml", "--output_dir", "o", "eval"])
    b = parse_args(["eval", "--config", "c.yaml", "--output_dir", "o"])
    assert vars(a) == vars(b)
    assert normalise_argv(["--output_dir", "eval"]) == ["train", "--output_dir", "eval"]


def test_unknown_option_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--nope"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_expected_errors_print_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("APP__TRAIN__EPOCS", "3")
    assert main(["--config", str(ROOT / "config/default.yaml"), "eval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "train.epocs" in err
    assert "Traceback" not in err


def test_missing_machine_profile_says_how_to_create(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("APP__PATHS__MACHINE_PROFILE", str(tmp_path / "none.yml"))
    assert (
        main(
            ["--config", str(ROOT / "config/default.yaml"), "--output_dir", str(tmp_path), "train"]
        )
        == 2
    )
    assert "scripts/generate_config.sh" in capsys.readouterr().err


def test_dry_run_without_profile_falls_back_to_the_example(tmp_path, caplog):
    from src.app.cli import _profile
    from src.app.config import load_config

    cfg = load_config(ROOT / "config/default.yaml")
    cfg = replace(cfg, paths=replace(cfg.paths, machine_profile=str(tmp_path / "none.yml")))
    profile = _profile(cfg, dry_run=True)
    assert profile.total_ram_gb > 0
    assert "config.yml.example" in caplog.text
    assert "generate_config.sh" in caplog.text


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The folder of one ``--dry_run`` (in-process to skip start-up imports; the module entry
    point itself is checked by ``test_module_entry_point``), on one thread like the rest of
    the suite."""
    tmp_path = tmp_path_factory.mktemp("dry")
    out = tmp_path / "run"
    (tmp_path / "config.yml").write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        argv = [
            "--config",
            str(ROOT / "config/default.yaml"),
            "--dry_run",
            "--output_dir",
            str(out),
        ]
        assert main(argv) == 0
    return out


@pytest.mark.slow
def test_dry_run_smoke(dry_run):
    """``--dry_run`` runs the whole chain on synthetic data."""
    metrics = json.loads((dry_run / "metrics.json").read_text())
    assert 0 <= metrics["f1_macro"] <= 1
    assert set(metrics["labels"]) == {"cell_type_coarse", "cell_type"}
    assert {"label_efficiency", "latent_quality", "baseline"} <= set(metrics)
    names = ["latent.npy", "model/weights.safetensors", "config.used.yaml", "annotated.h5ad"]
    names += [f"figures/{name}.png" for name in FIGURES]
    for name in names:
        assert (dry_run / name).exists(), name


@pytest.mark.slow
def test_a_second_core_changes_no_output(dry_run, tmp_path):
    """evaluate (the UMAP in a forked child) and plot (the metrics figures in one) on two cores
    write what the one-core dry run wrote: the same metrics, UMAP and figure bytes."""
    import anndata as ad

    from src.app import stages
    from src.app.config import load_config
    from src.app.machine import profile_from_dict

    cfg = load_config(dry_run / "config.used.yaml")
    profile = profile_from_dict(profile_dict(annotation_threads=2))
    metrics, annotated = tmp_path / "metrics.json", tmp_path / "annotated.h5ad"
    stages.evaluate(
        cfg, input=dry_run / "preprocessed.h5ad", embedded=dry_run / "embedded.h5ad",
        output=metrics, annotated=annotated, profile=profile,
    )  # fmt: skip
    assert json.loads(metrics.read_text()) == json.loads((dry_run / "metrics.json").read_text())
    umap = ad.read_h5ad(annotated).obsm["X_umap"]
    np.testing.assert_array_equal(umap, ad.read_h5ad(dry_run / "annotated.h5ad").obsm["X_umap"])
    figures = stages.plot(
        cfg, input=annotated, metrics=metrics, model_dir=dry_run / "model",
        output=tmp_path / "figures", profile=profile,
    )  # fmt: skip
    for figure in figures:
        assert figure.read_bytes() == (dry_run / "figures" / figure.name).read_bytes(), figure


@pytest.mark.slow
def test_annotated_h5ad_opens_and_plots_in_scanpy(dry_run):
    """annotated.h5ad works in scanpy as it is: latent, UMAP, predictions with their colours,
    config and metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    adata = sc.read_h5ad(dry_run / "annotated.h5ad")
    assert adata.obsm["X_vae"].shape[0] == adata.n_obs
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)
    assert "X_pca" in adata.obsm
    key = "cell_type_coarse"
    columns = [key, f"predicted_{key}", f"predicted_{key}_knn", f"predicted_{key}_logreg"]
    for column in columns:
        categories = adata.obs[column].cat.categories
        assert len(adata.uns[f"{column}_colors"]) == len(categories), column
    assert list(adata.uns[f"{key}_colors"]) == list(adata.uns[f"predicted_{key}_knn_colors"])
    confidence = adata.obs[f"predicted_{key}_knn_confidence"]
    assert ((confidence > 0) & (confidence <= 1)).all()
    assert adata.obs["label_visible"].dtype == bool
    assert json.loads(adata.uns["config"])["eval"]["n_repeats"] == 2
    assert json.loads(adata.uns["metrics"])["f1_macro"] == pytest.approx(
        json.loads((dry_run / "metrics.json").read_text())["f1_macro"]
    )
    fig = sc.pl.umap(adata, color=columns[:2], show=False, return_fig=True)
    fig.savefig(dry_run / "scanpy_umap.png")
    matplotlib.pyplot.close(fig)
    assert (dry_run / "scanpy_umap.png").stat().st_size > 0


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "src.app.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "eval", "viz", "pipeline", "download", "embed", "annotate", "plot"):
        assert command in proc.stdout

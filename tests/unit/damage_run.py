"""The byte-damage fuzz of every stage, run in a process of its own (``python -m
tests.unit.damage_run OUT [PER_H5AD PER_OTHER SEED]``): a tiny run made by the CLI stages, then
each stage run through the CLI in a forked child on copies of its inputs with a few bytes
damaged; the outcome counts go to ``OUT/results.json``.

A process of its own, with numba's workqueue threading layer: a process that has used numba's
OpenMP pool cannot fork (the pool's fork handler kills the child), and pytest's may have.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from src.app.checksums import TRAILER_LEN
from src.app.cli import main
from src.app.core.data.synthetic import synthetic_counts
from tests.conftest import profile_dict
from tests.unit.conftest import RUN, snapshot
from tests.unit.damage import byte_regions, damage, hdf5_regions, result_digest, run_cli

CONFIG = {
    **RUN,
    "preprocess": {**RUN["preprocess"], "n_top_genes": 60},
    "eval": {"label_fractions": [0.5], "n_repeats": 1, "n_folds": 3},
    "viz": {"dpi": 20},
}
# stage -> its inputs (name in the run's files), its outputs (under out/)
STAGES = {
    "download": (("source",), ("raw.h5ad",)),
    "preprocess": (("raw",), ("pre.h5ad",)),
    "train": (("pre",), ("model", "latent.npy", "embedded.h5ad")),
    "embed": (("model", "pre"), ("latent.npy", "emb.h5ad")),
    "evaluate": (("pre", "emb"), ("metrics.json", "annotated.h5ad")),
    "plot": (("annotated", "metrics", "model"), ("figures",)),
}
FILES = {
    "source": "source.h5ad",
    "raw": "raw.h5ad",
    "pre": "pre.h5ad",
    "emb": "emb.h5ad",
    "annotated": "annotated.h5ad",
    "metrics": "metrics.json",
    "model": "model",
}


@dataclass(frozen=True)
class Target:
    stage: str
    input: str  # the damaged input
    part: str | None = None  # a file of the checkpoint folder
    sealed: bool = True

    def __str__(self) -> str:
        what = f"{self.input}/{self.part}" if self.part else self.input
        return f"{self.stage}({what}{'' if self.sealed else ', unsealed'})"


EARLY = [
    Target("download", "source", sealed=False),
    Target("preprocess", "raw"),
    Target("preprocess", "raw", sealed=False),
    Target("train", "pre"),
    Target("train", "pre", sealed=False),
    Target("embed", "pre", sealed=False),
]
LATE = [
    Target("evaluate", "emb"),
    Target("evaluate", "emb", sealed=False),
    Target("evaluate", "pre", sealed=False),
    Target("plot", "annotated"),
    Target("plot", "annotated", sealed=False),
]
OTHER = [
    Target("embed", "model", "weights.safetensors"),
    Target("embed", "model", "model.json"),
    Target("plot", "metrics", sealed=False),  # metrics.json carries no checksum
    Target("plot", "model", "history.json"),
]


def _run_stage(
    root: Path, stage: str, files: dict[str, Path], out: Path
) -> tuple[list[str], dict[str, str]]:
    """argv and env of ``stage`` on ``files`` (name -> path) writing into ``out``."""
    argv = ["--config", str(root / "run.yaml"), stage]
    if stage == "download":
        return [*argv, "--output", str(out / "raw.h5ad")], {"APP__DATA__SOURCE": str(files["source"])}  # fmt: skip
    options = {
        "preprocess": {"--input": files.get("raw"), "--output": out / "pre.h5ad"},
        "train": {"--input": files.get("pre"), "--model_dir": out / "model", "--output_dir": out},
        "embed": {
            "--model_dir": files.get("model"), "--input": files.get("pre"),
            "--latent": out / "latent.npy", "--output": out / "emb.h5ad",
        },
        "evaluate": {
            "--input": files.get("pre"), "--embedded": files.get("emb"),
            "--output": out / "metrics.json", "--annotated": out / "annotated.h5ad",
        },
        "plot": {
            "--input": files.get("annotated"), "--metrics": files.get("metrics"),
            "--model_dir": files.get("model"), "--output": out / "figures",
        },
    }[stage]  # fmt: skip
    return argv + [str(x) for kv in options.items() for x in kv], {}


def _make(root: Path, files: dict[str, Path], stages: tuple[str, ...]) -> None:
    """Run ``stages`` in process (which also warms up every import for the forked runs) and
    write unsealed copies of the h5ad files they made under ``root/foreign``."""
    for stage in stages:
        argv, env = _run_stage(root, stage, files, root / "base")
        os.environ.update(env)
        assert main(argv) == 0, stage
        for key in env:
            del os.environ[key]
        for name in STAGES[stage][1]:
            made = root / "base" / name
            if made.suffix == ".h5ad":
                (root / "foreign" / name).write_bytes(made.read_bytes()[:-TRAILER_LEN])


def make_run(root: Path) -> tuple[Path, dict[str, Path]]:
    """A tiny run made by the CLI stages under ``root``: the folder and its files by name."""
    root.mkdir(parents=True)
    (root / "config.yml").write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    paths = {name: str(root / name) for name in ("resources", "results", "logs")}
    paths["machine_profile"] = str(root / "config.yml")
    (root / "run.yaml").write_text(yaml.safe_dump({**CONFIG, "paths": paths}))
    (root / "base").mkdir()
    (root / "foreign").mkdir()
    synthetic_counts(n_cells=90, n_genes=200, seed=5).write_h5ad(root / "base" / "source.h5ad")
    files = {name: root / "base" / file for name, file in FILES.items()}
    _make(root, files, tuple(STAGES))
    return root, files


def _inputs(tiny_run, target: Target, where: Path) -> dict[str, Path]:
    """Copies of the target stage's inputs under ``where`` (unsealed ones where asked)."""
    root, files = tiny_run
    out = {}
    for name in STAGES[target.stage][0]:
        source = files[name]
        if not target.sealed and name == target.input and (root / "foreign" / source.name).exists():
            source = root / "foreign" / source.name
        dest = where / source.name
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)
        out[name] = dest
    return out


def _old_outputs(stage: str, out: Path) -> None:
    for name in STAGES[stage][1]:
        if "." in name:
            (out / name).write_bytes(b"old")
        else:
            (out / name).mkdir()
            (out / name / "old").write_bytes(b"old")


@dataclass
class Variant:
    target: Target
    region: str
    seed: int


def _damaged_file(files: dict[str, Path], target: Target) -> Path:
    path = files[target.input]
    return path / target.part if target.part else path


def run_variant(tiny_run, variant: Variant, where: Path, baseline: dict) -> tuple[str, str]:
    """(outcome, detail): outcome 'same', 'different', 'error' (well formed), or 'bad' (a
    signal, a timeout, another exit status, a traceback, a malformed error, a changed output)."""
    target = variant.target
    (where / "in").mkdir(parents=True)
    (where / "out").mkdir()
    files = _inputs(tiny_run, target, where / "in")
    path = _damaged_file(files, target)
    regions = hdf5_regions(path) if path.suffix == ".h5ad" else byte_regions(path)
    region = variant.region if variant.region in regions else sorted(regions)[0]
    bad, what = damage(path.read_bytes(), regions, random.Random(variant.seed), region)
    path.write_bytes(bad)
    _old_outputs(target.stage, where / "out")
    before = snapshot(where / "out")
    argv, env = _run_stage(tiny_run[0], target.stage, files, where / "out")
    status = run_cli(argv, env, where / "stderr.txt")
    # the error line alone, less the training progress bar (tqdm's lines start with 'train:')
    err = "\n".join(
        line
        for line in (where / "stderr.txt").read_text().splitlines()
        if not line.startswith("train:")
    )
    detail = f"{target} {what}: {status}: {err.strip()[:400]}"
    if status == "2":
        lines = err.splitlines()
        named = path.name in err or str(path.parent) in err
        ok = len(lines) == 1 and lines[0].startswith("error: ") and named
        ok = ok and snapshot(where / "out") == before
        return ("error" if ok else "bad"), detail
    if status != "0" or err.strip():
        return "bad", detail
    outputs = [where / "out" / name for name in STAGES[target.stage][1]]
    same = result_digest(outputs) == baseline[(target.stage, target.sealed)]
    return ("same" if same else "different"), detail


def baselines(tiny_run, targets: list[Target], where: Path) -> dict:
    """The outputs' digest of each target stage on undamaged inputs (run as the variants are)."""
    out = {}
    for target in targets:
        key = (target.stage, target.sealed)
        if key in out:
            continue
        run = where / f"{target.stage}-{target.sealed}"
        (run / "in").mkdir(parents=True)
        (run / "out").mkdir()
        files = _inputs(tiny_run, target, run / "in")
        _old_outputs(target.stage, run / "out")
        argv, env = _run_stage(tiny_run[0], target.stage, files, run / "out")
        status = run_cli(argv, env, run / "stderr.txt")
        assert status == "0", (target, status, (run / "stderr.txt").read_text())
        out[key] = result_digest([run / "out" / name for name in STAGES[target.stage][1]])
    return out


def fuzz(tiny_run, targets: list[Target], per_target: int, where: Path, seed: int) -> Counter:
    """Damage each target ``per_target`` times (regions in turn); the outcome counts, with every
    bad run's detail in the assertion message."""
    base = baselines(tiny_run, targets, where / "baseline")
    counts: Counter = Counter()
    bad = []
    regions = ("header", "metadata", "index", "data", "seal", "text")
    for t, target in enumerate(targets):
        for i in range(per_target):
            variant = Variant(target, regions[i % len(regions)], seed + 1000 * t + i)
            outcome, detail = run_variant(tiny_run, variant, where / f"v{t}-{i}", base)
            counts[outcome] += 1
            counts[f"{outcome} {'sealed' if target.sealed else 'unsealed'}"] += 1
            if outcome == "bad" or (outcome == "different" and target.sealed):
                bad.append(detail)
            shutil.rmtree(where / f"v{t}-{i}")
    counts["bad details"] = bad  # type: ignore[assignment]
    return counts


def run_all(out: Path, per_h5ad: int, per_other: int, seed: int) -> dict:
    """Every target fuzzed; the counts (and each bad run's detail) as a dict."""
    tiny = make_run(out / "run")
    h5ad = fuzz(tiny, EARLY + LATE, per_h5ad, out / "h5ad", seed)
    other = fuzz(tiny, OTHER, per_other, out / "other", seed + 1)
    bad = h5ad.pop("bad details") + other.pop("bad details")
    return {"h5ad": dict(h5ad), "other": dict(other), "bad": bad}


if __name__ == "__main__":
    target = Path(sys.argv[1])
    numbers = [int(a) for a in sys.argv[2:5]] or [24, 10, 1]
    result = run_all(target, *numbers)
    (target / "results.json").write_text(json.dumps(result, indent=2))

"""The mapping benchmark: annotate a query with a model trained on a labelled reference.

Scenarios (reference -> query, every tool trained on the reference only, same query cells):

- ``kang``: PBMC 3k (its 2,638 labelled cells, coarse labels) -> Kang 2018 (1,556 PBMCs, half
  IFN-beta stimulated, 4 batches, 1,176 genes shared): ours (the map stage's core with the
  default config, ``map.batch_key: batch``), the PCA + kNN transfer (scanpy ``ingest``'s route),
  CellTypist (best match and probability match) and scANVI + scArches (``mapping_peers.py``);
- ``kang-without-<type>``: the same with one type left out of the reference: the share of its
  query cells called ``unknown`` (and of the other cells);
- ``pbmc-half``: a seeded, stratified half of PBMC 3k -> the other half, also with one type left
  out of the reference half (a query from the same experiment: no shift to explain away).

Ours runs in this process on 2 threads (stages' core functions, one fresh model per seed).
Prints one markdown table (macro F1 on the types the reference has, accuracy, the share of
known-type cells called unknown, the share of left-out-type cells called unknown, seconds from
raw reference to annotated query) and writes it to ``results/bench_mapping/table.md``.

    uv run --extra bench python bench/bench_mapping.py [--seeds 0 1 2] [--peers ...]
        [--holdout "B cells" ...] [--scenarios kang kang-holdout pbmc-half]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
PBMC = DATA / "pbmc3k" / "pbmc3k_raw.h5ad"
KANG = DATA / "panel" / "kang_ifnb_muscat.h5ad"
OUT = ROOT / "results" / "bench_mapping"
KEY = "cell_type_coarse"
HOLDOUT = ("B cells", "CD14+ Monocytes", "NK cells")


def load_data() -> tuple[Any, Any]:
    """PBMC 3k's labelled cells and Kang with its labels under PBMC's key."""
    import anndata as ad

    pbmc = ad.read_h5ad(PBMC)
    pbmc = pbmc[pbmc.obs[KEY].notna()].copy()
    kang = ad.read_h5ad(KANG)
    kang.obs[KEY] = kang.obs["label"].astype(str)
    return pbmc, kang


def halves(pbmc: Any, seed: int) -> tuple[Any, Any]:
    """A stratified half of PBMC 3k and the other half."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(pbmc.n_obs)
    a, b = train_test_split(idx, test_size=0.5, stratify=pbmc.obs[KEY], random_state=seed)
    return pbmc[np.sort(a)].copy(), pbmc[np.sort(b)].copy()


def config(seed: int, query_batch_key: str | None) -> Any:
    from src.app.config import load_config

    cfg = load_config(ROOT / "config" / "default.yaml")  # APP__ overrides apply
    return dataclasses.replace(
        cfg, seed=seed, map=dataclasses.replace(cfg.map, batch_key=query_batch_key)
    )


def run_ours(ref: Any, query: Any, *, seed: int, query_batch_key: str | None) -> dict:
    """Preprocess and train on ``ref`` (raw counts), then map ``query``: the stages' cores."""
    from src.app.core.data.preprocess import preprocess
    from src.app.core.data_adapter import DataAdapter
    from src.app.core.map.run import map_query
    from src.app.core.model.runtime import runtime_for
    from src.app.core.model_adapter import ModelAdapter

    cfg = config(seed, query_batch_key)
    runtime = runtime_for(cfg)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.h5ad"
        ref.write_h5ad(raw_path)
        pre = preprocess(ref, cfg.preprocess, seed=seed)
        model = ModelAdapter(cfg, runtime=runtime)
        model.fit(DataAdapter(cfg, runtime=runtime, adata=pre))
        model.save(Path(tmp) / "model")
        mapped = map_query(
            cfg, model_dir=Path(tmp) / "model", reference=pre, raw_reference=raw_path,
            query=query, runtime=runtime, where="query",
        )  # fmt: skip
    seconds = time.perf_counter() - start
    pred = mapped.annotated.obs[f"predicted_{KEY}"].astype(str).to_numpy()
    return {"pred": list(pred), "seconds": seconds, "refit": mapped.refit is not None}


def score(pred: list[str], query: Any, ref: Any) -> dict:
    from src.app.core.map.predict import query_metrics

    classes = sorted(set(ref.obs[KEY].astype(str)))
    return query_metrics(query.obs[KEY].to_numpy(), np.asarray(pred, dtype=object), classes)


def run_scenario(
    name: str, ref: Any, query: Any, args: argparse.Namespace, *, batch_key: str | None,
    peers: tuple[str, ...] = (),
) -> list[dict]:  # fmt: skip
    """Rows of one scenario: ours over the seeds, then each peer (seed 0)."""
    rows = []
    for seed in args.seeds:
        result = run_ours(ref, query, seed=seed, query_batch_key=batch_key)
        rows.append({"scenario": name, "tool": "ours", "seed": seed, **result})
        rows[-1].update(score(result["pred"], query, ref))
        print(f"{name} ours seed {seed}: F1 {rows[-1]['macro_f1']:.3f}", flush=True)
    for peer in peers:
        from bench.mapping_peers import run_peer

        result = run_peer(
            peer, ref, query, label_key=KEY, query_batch_key=batch_key, seed=0, threads=2,
            cache_dir=OUT / "peers",
        )  # fmt: skip
        rows.append({"scenario": name, "tool": peer, "seed": 0, **result})
        rows[-1].update(score(result["pred"], query, ref))
        print(f"{name} {peer}: F1 {rows[-1]['macro_f1']:.3f}", flush=True)
    return rows


def fmt(values: list, digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: list[dict]) -> str:
    head = (
        "| scenario | tool | seeds | macro F1 (known types) | accuracy | known called unknown "
        "| left-out type called unknown | seconds |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["tool"]), []).append(row)
    for (scenario, tool), group in groups.items():
        cells = [fmt([r[k] for r in group]) for k in ("macro_f1", "accuracy")]
        cells += [
            fmt([r[k] for r in group]) for k in ("known_called_unknown", "novel_called_unknown")
        ]
        cells.append(fmt([r["seconds"] for r in group], 1))
        lines.append(f"| {scenario} | {tool} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--peers", nargs="*", default=None, help="default: every peer")
    parser.add_argument("--holdout", nargs="*", default=list(HOLDOUT))
    parser.add_argument("--scenarios", nargs="*", default=["kang", "kang-holdout", "pbmc-half"])
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from bench.mapping_peers import PEERS

    peers = tuple(PEERS if args.peers is None else args.peers)
    pbmc, kang = load_data()
    rows: list[dict] = []
    if "kang" in args.scenarios:
        rows += run_scenario("kang", pbmc, kang, args, batch_key="batch", peers=peers)
    for held in args.holdout if "kang-holdout" in args.scenarios else []:
        ref = pbmc[pbmc.obs[KEY] != held].copy()
        rows += run_scenario(f"kang-without-{held}", ref, kang, args, batch_key="batch")
    if "pbmc-half" in args.scenarios:
        ref, query = halves(pbmc, seed=0)
        rows += run_scenario("pbmc-half", ref, query, args, batch_key=None)
        for held in args.holdout:
            sub = ref[ref.obs[KEY] != held].copy()
            rows += run_scenario(f"pbmc-half-without-{held}", sub, query, args, batch_key=None)
    text = table(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Summary table across runs: the mean and sample SD of each metric, then one column per run.

usage: python summarise_runs.py --output runs_summary.tsv results/<run_id>/metrics.json ...
Metrics are the numbers under keys ending in accuracy, f1_macro, f1_weighted, auroc, silhouette,
ari or nmi (per-class scores, supports, confusion matrices and SDs are left out); a run is named by
its metrics file's folder.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

METRIC = re.compile(r"(accuracy|f1_macro|f1_weighted|auroc|silhouette|ari|nmi)$")


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Dotted key -> value of every metric in a metrics.json tree."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalar_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and METRIC.search(key):
            out[name] = float(value)
    return out


def summary_rows(runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Header, then one row per metric: name, mean, SD (n - 1; nan for one run), each run."""
    flat = {run: scalar_metrics(m) for run, m in runs.items()}
    names = sorted({name for values in flat.values() for name in values})
    rows = [["metric", "mean", "sd", *runs]]
    for name in names:
        values = [flat[run].get(name, math.nan) for run in runs]
        present = [v for v in values if not math.isnan(v)]
        mean = statistics.fmean(present) if present else math.nan
        sd = statistics.stdev(present) if len(present) > 1 else math.nan
        rows.append([name, *(f"{v:.4f}" for v in (mean, sd, *values))])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("metrics", nargs="+", type=Path)
    args = parser.parse_args(argv)
    runs = {path.parent.name: json.loads(path.read_text()) for path in args.metrics}
    rows = summary_rows(runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join("\t".join(row) + "\n" for row in rows))
    print(f"{len(rows) - 1} metrics across {len(runs)} runs -> {args.output}")


if __name__ == "__main__":
    main()

"""bench_panel's markdown table: the mean and SD over the seeds of every score, the seconds to a
model (and their ratio to ours), peak RSS and epochs, a row per data set, label key and method,
under a header that names the settings and the notes of the run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.panel_sets import SETS, bench_profile, set_config

ROWS = ("ours", "scvi", "pca", "harmony")  # pca's child also writes harmony on batch sets
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

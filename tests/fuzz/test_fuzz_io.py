"""Hypothesis on the path and file boundaries: names that become paths never escape their root,
and whatever an h5ad holds (truncated, random bytes, damaged or inconsistent parts), reading it
either works or raises a DataError naming the file."""

from __future__ import annotations

import os
import re
import shutil
import string
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.app.config import ConfigError, config_from_dict
from src.app.core.data.download import source_name
from src.app.core.data.h5ad import read_h5ad
from src.app.core.data_adapter import DataAdapter
from src.app.errors import DataError
from src.app.layout import RunLayout, child, raw_path
from tests.conftest import replace, small_config
from tests.examples import examples

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
names = st.text(alphabet=string.printable + "\u00e9\u2215\u0000", max_size=16)
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


def inside(path: Path, root: Path) -> bool:
    return Path(os.path.normpath(path)).parent == Path(os.path.normpath(root))


@settings(max_examples=examples(150), deadline=None)
@given(names)
def test_source_names_become_one_safe_file_name(source):
    name = source_name(source)
    assert SAFE.match(name)
    assert name not in {".", ".."}
    source = source if source.strip() else "x"  # an empty source is a config error of its own
    cfg = config_from_dict({"data": {"source": source}, "paths": {"resources": "res"}})
    assert inside(raw_path(cfg), Path("res/raw"))


@settings(max_examples=examples(150), deadline=None)
@given(names)
def test_child_paths_stay_in_their_root(name):
    try:
        path = child("/data/results", name, key="run_id")
    except ConfigError as exc:
        assert "run_id" in str(exc)
        return
    assert inside(path, Path("/data/results"))
    cfg = config_from_dict({"run_id": name, "paths": {"results": "/data/results"}})
    assert RunLayout.of(cfg).root == path


@pytest.fixture(scope="module")
def h5ad_file(tmp_path_factory, pre_adata):
    path = tmp_path_factory.mktemp("fuzz") / "pre.h5ad"
    pre_adata[:40, :30].copy().write_h5ad(path)
    return path


@settings(max_examples=examples(25), **SETTINGS)
@given(cut=st.floats(0, 1, exclude_max=True), garbage=st.binary(max_size=64))
def test_truncated_or_foreign_files_fail_with_a_data_error(tmp_path, h5ad_file, cut, garbage):
    data = h5ad_file.read_bytes()
    for i, content in enumerate((data[: int(cut * len(data))], garbage)):
        bad = tmp_path / f"bad{i}.h5ad"
        bad.write_bytes(content)
        with pytest.raises(DataError, match=re.escape(str(bad))):
            read_h5ad(bad, what="data")


ARRAYS = st.one_of(
    st.lists(st.integers(-3, 60), max_size=50).map(lambda v: np.array(v, dtype=np.int64)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=50).map(
        lambda v: np.array(v, dtype=np.float32)
    ),
    st.just(np.array(["a", "b"], dtype=object)),
)
PARTS = ["X/data", "X/indices", "X/indptr", "obs/_index", "var/_index", "obs/split/codes", "X"]


@pytest.mark.filterwarnings("ignore::Warning")  # anndata: parts without encoding metadata
@settings(max_examples=examples(30), **SETTINGS)
@given(
    damage=st.tuples(
        st.sampled_from(PARTS),
        ARRAYS,
        st.none() | st.tuples(st.integers(-1, 50), st.integers(-1, 40)),
    ),
    layout=st.sampled_from(["dense", "disk"]),
)
def test_damaged_parts_fail_with_a_data_error(tmp_path, runtime, h5ad_file, damage, layout):
    """A part replaced by a random array (and maybe a wrong shape): read in memory or streamed
    from the file in blocks, the data either serves batches or raises a DataError."""
    part, value, shape = damage
    bad = tmp_path / "bad.h5ad"
    shutil.copy(h5ad_file, bad)
    with h5py.File(bad, "r+") as f:
        del f[part]
        f.create_dataset(part, data=value.astype("S") if value.dtype == object else value)
        if shape is not None and isinstance(f["X"], h5py.Group):
            f["X"].attrs["shape"] = np.array(shape)
    cfg = small_config(tmp_path)
    rt = replace(runtime, max_ram_gb=4.0 if layout == "dense" else 1e-7, batch_size=8)
    try:
        data = DataAdapter(cfg, runtime=rt, path=bad)
        for batch in (*data.iter_train_batches(), *data.iter_all_batches()):
            assert batch.x.shape[1] == data.n_genes
    except DataError as exc:
        assert str(bad) in str(exc)

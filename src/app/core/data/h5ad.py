"""The h5ad boundary: every read of an input h5ad, whole or one matrix in row blocks, and the
additions the embed stage writes into a copy of one.

A missing, truncated, non-HDF5 or non-AnnData file, or one whose parts are inconsistent, becomes a
:class:`DataError` that names the file. Byte-level damage too: :func:`check_h5ad` (``h5_guard``)
checks a file's seal and walks its structure in a forked child before a stage reads it, so that a
crash or a hang of libhdf5 costs the child only.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from src.app.core.data.h5_guard import check_hdf5
from src.app.errors import DataError
from src.app.io_utils import disk_full

if TYPE_CHECKING:
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp

READ_CHUNK = 1 << 24  # values per h5py read: bounds the temporary arrays (64-128 MB)
SPARSE = ("csr_matrix", "csc_matrix")


def check_unique(names: Any, *, what: str, where: str) -> None:
    """Refuse duplicated ``what`` ('cell' or 'gene') names, naming a few of them."""
    import pandas as pd

    index = pd.Index(names)
    if index.is_unique:
        return
    dup = index[index.duplicated()].unique()
    axis = "obs" if what == "cell" else "var"
    raise DataError(
        f"{where} has {len(dup)} duplicated {what} names (e.g. {list(map(str, dup[:3]))}); "
        f"make them unique, e.g. with AnnData.{axis}_names_make_unique()"
    )


def require_file(path: str | Path, what: str, hint: str = "") -> Path:
    """``path`` as a Path; a :class:`DataError` naming ``what`` when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} not found" + (f"; {hint}" if hint else ""))
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not an .h5ad file")
    return path


def check_h5ad(path: str | Path, what: str, hint: str = "") -> Path:
    """``path`` as a Path once it exists and passes the damage checks of ``h5_guard``; a
    :class:`DataError` naming ``what``, the file and the element at fault otherwise."""
    path = require_file(path, what, hint)
    check_hdf5(path, what=what)
    return path


@contextlib.contextmanager
def reading(
    path: str | Path, what: str, *, expected: str = "a complete .h5ad file"
) -> Iterator[None]:
    """Turn any failure of the file readers inside the block into a DataError naming ``path``."""
    try:
        yield
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # the readers raise many types (OSError, KeyError, IORegistryError...)
        if disk_full(exc):  # a write in the block: the writer's OutputError says it best
            raise
        raise DataError(
            f"{what} {path} could not be read ({type(exc).__name__}: {exc}); is it {expected}?"
        ) from None


def read_h5ad(path: str | Path, *, what: str, hint: str = "") -> ad.AnnData:
    """The whole AnnData of ``path`` in memory."""
    path = check_h5ad(path, what, hint)  # first: a forked check is cheap before big imports
    import anndata as ad

    with reading(path, what):
        adata = ad.read_h5ad(path)
    parts = {"X": adata.X, **{f"layers/{k}": v for k, v in adata.layers.items()}}
    parts |= {f"obsp/{k}": v for k, v in adata.obsp.items()}
    if adata.raw is not None:
        parts["raw/X"] = adata.raw.X
    for key, matrix in parts.items():
        check_sparse(matrix, f"{what} {path}", key)
    return adata


def check_sparse(matrix: Any, where: str, key: str) -> None:
    """Refuse a sparse matrix whose index arrays do not describe its shape (anndata does not
    check them; scipy then reads out of bounds, and may crash). O(stored values)."""
    import scipy.sparse as sp

    if not sp.issparse(matrix) or matrix.format not in ("csr", "csc"):
        return
    try:
        matrix.check_format(full_check=True)
    except ValueError as exc:
        raise DataError(f"{where}: its matrix {key} is damaged ({exc})") from None


def read_annotations(path: str | Path, *, what: str, hint: str = "") -> tuple[pd.DataFrame, Any]:
    """``(.obs, .var_names)`` of ``path`` without reading any matrix."""
    import anndata as ad
    import h5py

    path = require_file(path, what, hint)
    with reading(path, what), h5py.File(path, "r") as f:
        return ad.io.read_elem(f["obs"]), ad.io.read_elem(f["var"]).index


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
    """A CSR matrix of the arrays (no copy of ``data`` or ``indices``), checked so that damaged
    index arrays cannot make later row reads or densifying go out of bounds."""
    import scipy.sparse as sp

    if indptr.shape != (shape[0] + 1,) or indptr[0] != 0 or (np.diff(indptr) < 0).any():
        raise ValueError(f"row pointers do not describe {shape[0]} rows")  # scipy skips this
    if indptr[-1] <= np.iinfo(np.int32).max:  # int32 index arrays: scipy keeps them, no copy
        indices = indices.astype(np.int32, copy=False)
        indptr = indptr.astype(np.int32, copy=False)
    matrix = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    matrix.check_format(full_check=True)
    return matrix


@dataclass(frozen=True)
class StoredMatrix:
    """One matrix of an h5ad file (``X`` or ``layers/<name>``), read as float32 CSR, whole or in
    row blocks, without loading the rest of the file. ``nnz`` is the stored values (cells x genes
    for a dense matrix)."""

    path: Path
    key: str
    shape: tuple[int, int]
    nnz: int
    encoding: str
    what: str

    @classmethod
    def open(cls, path: str | Path, key: str, *, what: str) -> StoredMatrix | None:
        """The matrix ``key`` of ``path``; None when the file has no such matrix."""
        import h5py

        path = require_file(path, what)
        with reading(path, what), h5py.File(path, "r") as f:
            if key not in f:
                return None
            node = f[key]
            if isinstance(node, h5py.Dataset):
                if node.ndim != 2:
                    raise DataError(f"{what} {path}: {key} is not a 2-D matrix")
                shape = tuple(int(s) for s in node.shape)
                return cls(path, key, shape, shape[0] * shape[1], "array", what)
            encoding = str(node.attrs.get("encoding-type", ""))
            if encoding not in SPARSE:
                raise DataError(f"{what} {path}: {key} has unknown encoding '{encoding}'")
            shape = tuple(int(s) for s in node.attrs["shape"])
            return cls(path, key, shape, int(node["data"].shape[0]), encoding, what)

    @contextlib.contextmanager
    def _node(self) -> Iterator[h5py.Group | h5py.Dataset]:
        import h5py

        with reading(self.path, self.what), h5py.File(self.path, "r") as f:
            yield f[self.key]

    def read(self) -> sp.csr_matrix:
        """The whole matrix, read in chunks into its final arrays (no second copy)."""
        if self.encoding != "csr_matrix":
            return self.read_rows(0, self.shape[0])
        with self._node() as node:
            indptr = node["indptr"][()]
            data = np.empty(self.nnz, dtype=np.float32)
            indices = np.empty(self.nnz, dtype=node["indices"].dtype)
            for start in range(0, self.nnz, READ_CHUNK):
                stop = min(start + READ_CHUNK, self.nnz)
                data[start:stop] = node["data"][start:stop]
                indices[start:stop] = node["indices"][start:stop]
            return _csr(data, indices, indptr, self.shape)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` (a CSC matrix is read whole first: store CSR to stream it)."""
        import anndata as ad
        import scipy.sparse as sp

        with self._node() as node:
            if self.encoding == "array":
                return sp.csr_matrix(np.asarray(node[start:stop], dtype=np.float32))
            if self.encoding == "csc_matrix":
                whole = ad.io.read_elem(node).tocsr()[start:stop]
                return whole.astype(np.float32, copy=False)
            indptr = node["indptr"][start : stop + 1].astype(np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            data = np.asarray(node["data"][lo:hi], dtype=np.float32)
            indices = node["indices"][lo:hi]
            return _csr(data, indices, indptr - lo, (stop - start, self.shape[1]))

    def row_blocks(self, block: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(first row, rows)`` of consecutive blocks of ``block`` rows."""
        for start in range(0, self.shape[0], block):
            yield start, self.read_rows(start, min(start + block, self.shape[0]))


def write_with_additions(
    source: str | Path,
    dest: str | Path,
    *,
    obs: Mapping[str, Any],
    obsm: Mapping[str, np.ndarray],
    uns: Mapping[str, Any],
    obsp: Mapping[str, Any] | None = None,
    what: str = "data",
) -> None:
    """Copy the h5ad ``source`` to ``dest`` and add ``.obs`` columns, ``.obsm`` arrays, ``.obsp``
    cell x cell matrices and ``.uns`` entries (replacing any of the same name), without loading
    its matrices. Damage in ``source`` that only a write meets (a group's heap) is a DataError
    naming ``what`` and ``source``."""
    import anndata as ad
    import h5py

    shutil.copyfile(source, dest)
    with reading(source, what), h5py.File(dest, "r+") as f:
        table = ad.io.read_elem(f["obs"])
        for name, values in obs.items():
            table[name] = values
        del f["obs"]
        ad.io.write_elem(f, "obs", table)
        for group, entries in (("obsm", obsm), ("obsp", obsp or {}), ("uns", uns)):
            if group not in f:
                ad.io.write_elem(f, group, {})
            for name, value in entries.items():
                if name in f[group]:
                    del f[group][name]
                ad.io.write_elem(f[group], name, value)

"""Where the expression matrix lives during training: the memory plan and three row stores.

- ``dense``: one float32 tensor on the device; the fast default for data that fits.
- ``sparse``: CSR rows in RAM, densified per batch; the same batches as ``dense``, so the same
  results.
- ``disk``: CSR row blocks read from the h5ad each epoch; the blocks and the cells within each are
  shuffled, so the order, and the results, differ a little from the other two.

Each store turns a list of cells (rows of the file) into ``(cells, dense float32 rows)`` batches,
the cells as an int64 tensor on the store's ``home`` device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from src.app.config import COUNT_LIKELIHOODS
from src.app.core.data.h5ad import READ_CHUNK, StoredMatrix
from src.app.errors import DataError
from src.app.machine import Runtime

if TYPE_CHECKING:
    import scipy.sparse as sp

log = logging.getLogger(__name__)

# the matrix may take this share of max_ram_usage_gb (or of the GPU's usable memory); the rest
# is for torch, the model, .obs and the batches in flight
DATA_MEMORY_SHARE = 0.5
MAX_BLOCK_CELLS = 1 << 16
GIB = 1 << 30


@dataclass(frozen=True)
class MemoryPlan:
    """Where the matrix lives (``dense``, ``sparse`` or ``disk``) and the sizes that decided it."""

    layout: str
    dense_bytes: int
    sparse_bytes: int
    budget_bytes: int

    def describe(self) -> str:
        return (
            f"{self.layout} (dense {self.dense_bytes / GIB:.2f} GiB, sparse "
            f"{self.sparse_bytes / GIB:.2f} GiB, data budget {self.budget_bytes / GIB:.2f} GiB)"
        )


def plan_memory(
    *, n_cells: int, n_genes: int, nnz: int, runtime: Runtime, vram_bytes: int = 0
) -> MemoryPlan:
    """Choose where the float32 matrix lives, before anything is densified.

    ``dense`` when the dense matrix and the CSR it is built from fit ``DATA_MEMORY_SHARE`` of
    ``max_ram_usage_gb`` (and on CUDA the dense one fits that share of ``gpu_memory_fraction``
    of ``vram_bytes``); else ``sparse`` when the CSR fits; else ``disk``.
    """
    dense = n_cells * n_genes * 4
    sparse = nnz * 8 + (n_cells + 1) * 8  # float32 values + int32 indices, row pointers
    budget = int(runtime.max_ram_gb * GIB * DATA_MEMORY_SHARE)
    fits_gpu = runtime.device == "cpu" or dense <= (
        runtime.gpu_memory_fraction * vram_bytes * DATA_MEMORY_SHARE
    )
    if dense + sparse <= budget and fits_gpu:
        layout = "dense"
    elif sparse <= budget:
        layout = "sparse"
    else:
        layout = "disk"
    return MemoryPlan(layout, dense, sparse, budget)


def stored_values(matrix: Any) -> int:
    """Values a matrix in memory stores: its non-zeros if sparse, every entry if dense."""
    import scipy.sparse as sp

    return int(matrix.nnz) if sp.issparse(matrix) else int(np.prod(matrix.shape))


def device_memory(runtime: Runtime) -> int:
    """Bytes of memory of the runtime's CUDA device (0 on the CPU)."""
    if runtime.device != "cuda" or not torch.cuda.is_available():
        return 0
    return int(torch.cuda.get_device_properties(torch.device("cuda")).total_memory)


def check_counts(x: torch.Tensor, name: str) -> None:
    """Check that ``x`` holds counts a count likelihood can score.

    Parameters
    ----------
    x
        Tensor that should hold non-negative integers (any dtype).
    name
        Name of the likelihood or data, used in the message.

    Raises
    ------
    DataError
        If ``x`` has NaN/Inf, negative or non-integer values; the message names the kinds found
        and gives an example bad value.
    """
    if x.numel() == 0 or x.dtype == torch.bool:
        return
    if not x.is_floating_point():  # integer dtypes can only be negative
        bad_kinds = {"negative values": x < 0}
    else:
        finite = torch.isfinite(x)
        bad_kinds = {
            "NaN/Inf values": ~finite,
            "negative values": finite & (x < 0),
            "non-integer values": finite & (x != torch.round(x)),
        }
    found = [(kind, mask) for kind, mask in bad_kinds.items() if bool(mask.any())]
    if not found:
        return
    any_bad = torch.stack([mask for _, mask in found]).any(dim=0)
    index = tuple(int(i) for i in torch.nonzero(any_bad)[0])
    example = x[index].item()
    kinds = ", ".join(f"{int(mask.sum())} {kind}" for kind, mask in found)
    raise DataError(
        f"count likelihood '{name}' needs non-negative integer counts; found {kinds} "
        f"(e.g. {example!r} at index {index}); pass raw counts, not normalised or "
        "log-transformed values"
    )


def check_values(values: np.ndarray, *, likelihood: str, where: str) -> None:
    """Refuse NaN/Inf (and for a count likelihood negative or non-integer values) among the
    stored values of a matrix, a chunk at a time so the checks' temporaries stay small."""
    flat = values.reshape(-1)
    for start in range(0, flat.size, READ_CHUNK):
        chunk = torch.from_numpy(flat[start : start + READ_CHUNK])
        try:
            if likelihood in COUNT_LIKELIHOODS:
                check_counts(chunk, likelihood)
            elif not bool(torch.isfinite(chunk).all()):
                raise DataError(f"holds {int((~torch.isfinite(chunk)).sum())} NaN or Inf values")
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``. From the CPU to CUDA through pinned memory, without waiting: a plain
    copy from pageable memory waits for all the work queued on the GPU (a sync per batch); the
    caching host allocator keeps the pinned copy until the transfer is done."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _slices(rows: np.ndarray, gen: torch.Generator | None, size: int) -> Iterator[np.ndarray]:
    """Consecutive ``size`` cells of ``rows``, shuffled by ``gen`` if given (then without a lone
    last cell, which breaks batch norm; it is seen again next epoch)."""
    if gen is not None:
        rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
    for start in range(0, len(rows), size):
        idx = rows[start : start + size]
        if gen is not None and len(idx) < 2 <= len(rows):
            continue
        yield idx


class DenseRows:
    """The whole matrix as one tensor on ``device``."""

    layout = "dense"

    def __init__(self, matrix: np.ndarray, device: str) -> None:
        self.home = torch.device(device)
        self.matrix = torch.from_numpy(matrix).to(self.home)

    def batches(
        self, rows: np.ndarray, *, gen: torch.Generator | None, size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The cells go to the device once per call (one copy, not one per batch); each batch
        is a slice of them. O(cells)."""
        slices = list(_slices(rows, gen, size))
        if not slices:
            return
        cells = to_device(torch.from_numpy(np.concatenate(slices)), self.home)
        start = 0
        for idx in slices:
            at = cells[start : start + len(idx)]
            start += len(idx)
            yield at, self.matrix.index_select(0, at)


class SparseRows:
    """The matrix as CSR on the CPU; each batch densified when it is served."""

    layout = "sparse"
    home = torch.device("cpu")

    def __init__(self, matrix: sp.csr_matrix) -> None:
        self.matrix = matrix

    def batches(
        self, rows: np.ndarray, *, gen: torch.Generator | None, size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in _slices(rows, gen, size):
            yield torch.from_numpy(idx), torch.from_numpy(self.matrix[idx].toarray())


class DiskRows:
    """The matrix left in the h5ad, read ``block`` cells at a time."""

    layout = "disk"
    home = torch.device("cpu")

    def __init__(self, stored: StoredMatrix, block: int) -> None:
        self.stored, self.block = stored, block

    def batches(
        self, rows: np.ndarray, *, gen: torch.Generator | None, size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``rows`` (sorted); with ``gen`` the blocks and the cells within each are
        shuffled. Cells left at a block's end open the next block's first batch. O(cells)."""
        import scipy.sparse as sp

        block, n_cells = self.block, self.stored.shape[0]
        blocks = np.unique(rows // block)
        if gen is not None:
            blocks = blocks[torch.randperm(len(blocks), generator=gen).numpy()]
        carry_idx, carry = np.empty(0, dtype=np.int64), None
        for b in blocks:
            first = int(b) * block
            lo, hi = np.searchsorted(rows, [first, first + block])
            members = rows[lo:hi]
            if gen is not None:
                members = members[torch.randperm(len(members), generator=gen).numpy()]
            part = self.stored.read_rows(first, min(first + block, n_cells))[members - first]
            idx = np.concatenate([carry_idx, members])
            part = sp.vstack([carry, part], format="csr") if carry is not None else part
            full = len(idx) - len(idx) % size
            for start in range(0, full, size):
                yield (
                    torch.from_numpy(idx[start : start + size]),
                    torch.from_numpy(part[start : start + size].toarray()),
                )
            carry_idx, carry = idx[full:], part[full:]
        if carry is not None and len(carry_idx) >= (2 if gen is not None else 1):
            yield torch.from_numpy(carry_idx), torch.from_numpy(carry.toarray())


RowStore = DenseRows | SparseRows | DiskRows


def load_rows(
    matrix: Any,
    stored: StoredMatrix | None,
    *,
    plan: MemoryPlan,
    likelihood: str,
    where: str,
    runtime: Runtime,
) -> tuple[RowStore, np.ndarray]:
    """Check the values, build the store the plan names and return it with each cell's total.

    ``matrix`` is the data in memory (CSR, CSC or dense), or None with ``stored`` for data still
    in its file; data already in memory never goes to ``disk`` (it stays as CSR).
    """
    import scipy.sparse as sp

    if stored is not None and plan.layout == "disk":
        per_cell = max(plan.sparse_bytes // max(stored.shape[0], 1), 1)
        block = int(
            np.clip(plan.budget_bytes // (4 * per_cell), runtime.batch_size, MAX_BLOCK_CELLS)
        )
        totals = np.empty(stored.shape[0])
        for start, rows in stored.row_blocks(block):
            check_values(rows.data, likelihood=likelihood, where=where)
            totals[start : start + rows.shape[0]] = np.asarray(
                rows.sum(axis=1, dtype=np.float64)
            ).reshape(-1)
        return DiskRows(stored, block), totals
    if matrix is None:
        matrix = stored.read()
    if sp.issparse(matrix):
        matrix = matrix.tocsr().astype(np.float32, copy=False)
        check_values(matrix.data, likelihood=likelihood, where=where)
    else:
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        check_values(matrix, likelihood=likelihood, where=where)
    totals = np.asarray(matrix.sum(axis=1, dtype=np.float64)).reshape(-1)
    if plan.layout == "dense":
        dense = matrix.toarray() if sp.issparse(matrix) else matrix
        return DenseRows(np.ascontiguousarray(dense, dtype=np.float32), runtime.device), totals
    return SparseRows(matrix if sp.issparse(matrix) else sp.csr_matrix(matrix)), totals

import gzip
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from src.app.config import DataConfig
from src.app.core.data.download import (
    PBMC3K_FINGERPRINT,
    acquire,
    fetch_pbmc3k,
    fingerprint,
    join_labels,
    read_counts,
    source_name,
)
from src.app.errors import DataError


def write_10x_mtx(adata, folder: Path) -> None:
    """The 10x Cell Ranger v2 layout: genes x cells matrix.mtx, genes.tsv, barcodes.tsv."""
    folder.mkdir(parents=True)
    scipy.io.mmwrite(str(folder / "matrix.mtx"), sp.csr_matrix(adata.X).T.astype(np.int64))
    genes = [f"ENSG{i:05d}\t{g}" for i, g in enumerate(adata.var_names)]
    (folder / "genes.tsv").write_text("\n".join(genes) + "\n")
    (folder / "barcodes.tsv").write_text("\n".join(adata.obs_names) + "\n")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory, raw_adata):
    """The 10x tarball, written once for the module's tests (read only)."""
    root = tmp_path_factory.mktemp("tarball")
    mtx = root / "src" / "filtered_gene_bc_matrices" / "hg19"
    write_10x_mtx(raw_adata, mtx)
    path = root / "serve" / "pbmc3k_filtered_gene_bc_matrices.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / "src" / "filtered_gene_bc_matrices", arcname="filtered_gene_bc_matrices")
    return path


@pytest.fixture
def http_server(tarball):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tarball.parent), **k
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{tarball.name}"
    server.shutdown()


def test_fetch_from_local_server_verifies_fingerprint(http_server, tmp_path, raw_adata):
    cache = tmp_path / "cache"
    cache.mkdir()
    adata = fetch_pbmc3k(http_server, cache, expected=fingerprint(raw_adata))
    assert adata.shape == raw_adata.shape
    assert (cache / "pbmc3k_filtered_gene_bc_matrices.tar.gz").exists()
    np.testing.assert_array_equal(adata.X.toarray(), raw_adata.X.toarray())


def test_fetch_rejects_other_content_and_removes_it(http_server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError, match="content fingerprint"):
        fetch_pbmc3k(http_server, cache, expected=PBMC3K_FINGERPRINT)
    assert not list(cache.iterdir())


def test_offline_download_says_how_to_use_a_local_copy(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError, match="APP__DATA__SOURCE"):
        fetch_pbmc3k("http://127.0.0.1:9/none.tar.gz", cache, timeout=2)
    assert not list(cache.iterdir())


def test_read_counts_formats(tmp_path, raw_adata):
    h5ad = tmp_path / "counts.h5ad"
    raw_adata.write_h5ad(h5ad)
    write_10x_mtx(raw_adata, tmp_path / "mtx")
    for path in (h5ad, tmp_path / "mtx"):
        adata = read_counts(path)
        assert fingerprint(adata) == fingerprint(raw_adata)


def test_read_counts_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_counts(tmp_path / "missing.h5ad")
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(DataError, match="could not be read"):
        read_counts(bad)
    other = tmp_path / "x.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="unknown format"):
        read_counts(other)


def test_join_labels_adds_missing_columns(tmp_path, raw_adata):
    adata = raw_adata.copy()
    del adata.obs["cell_type"]
    table = tmp_path / "labels.csv"
    rows = [f"{b},{'T' if i % 2 else 'B'}" for i, b in enumerate(adata.obs_names[:10])]
    table.write_text("barcode,cell_type\n" + "\n".join(rows) + "\n")
    join_labels(adata, table)
    assert adata.obs["cell_type"].notna().sum() == 10
    assert adata.obs["cell_type"].iloc[1] == "T"


def test_acquire_local_with_labels(tmp_path, raw_adata):
    path = tmp_path / "counts.h5ad"
    raw_adata.write_h5ad(path)
    adata = acquire(DataConfig(source=str(path), labels=None), resources_dir=tmp_path)
    assert "cell_type" in adata.obs


def test_fingerprint_of_dense_and_sparse(raw_adata):
    dense = raw_adata.copy()
    dense.X = dense.X.toarray()
    assert fingerprint(dense) == fingerprint(raw_adata)


@pytest.mark.parametrize(
    ("source", "name"),
    [("pbmc3k", "pbmc3k"), ("data/my file.h5ad", "my_file"), ("x/mtx/", "mtx"), ("a/b.h5", "b")],
)
def test_source_name(source, name):
    assert source_name(source) == name


def test_gzip_is_not_mistaken_for_h5ad(tmp_path):
    path = tmp_path / "counts.h5ad"
    path.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(DataError):
        read_counts(path)

"""Checksums written with every artifact, so that a byte changed since it was written is found.

- A file (every ``.h5ad`` a stage writes) ends in a seal: a 79-byte trailer holding the SHA-256 of
  the bytes before it. HDF5 ignores bytes past its end of file, so scanpy, anndata and h5py read
  a sealed file as it is; rewriting it in place with h5py truncates the trailer away (the file is
  then unsealed, which readers accept as they accept anyone's file).
- A folder (the checkpoint) holds ``SHA256SUMS`` of its files, in the format of
  ``sha256sum -c``.

The readers report what they find; the callers raise their own error (data or checkpoint).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

MAGIC = b"\n#h5ad-sha256 "
TRAILER_LEN = len(MAGIC) + 64 + 1
MANIFEST = "SHA256SUMS"
_BLOCK = 1 << 20
_HEX = re.compile(rb"^[0-9a-f]{64}$")
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def sha256_of(path: str | Path, size: int | None = None) -> str:
    """The SHA-256 of the first ``size`` bytes of ``path`` (all of it by default). O(size)."""
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with Path(path).open("rb") as fh:
        left = os.fstat(fh.fileno()).st_size if size is None else size
        while left > 0:
            n = fh.readinto(view[: min(left, _BLOCK)])
            if not n:
                break
            digest.update(view[:n])
            left -= n
    return digest.hexdigest()


def _tail(path: Path, size: int) -> bytes:
    with Path(path).open("rb") as fh:
        fh.seek(size - TRAILER_LEN)
        return fh.read(TRAILER_LEN)


def seal_status(path: str | Path) -> str:
    """'unsealed' (no trailer), 'intact' (the bytes match their trailer) or 'damaged' (a trailer
    whose checksum does not match, or a trailer that is itself damaged)."""
    path = Path(path)
    size = path.stat().st_size
    if size < TRAILER_LEN:
        return "unsealed"
    tail = _tail(path, size)
    head, digest = tail[: len(MAGIC)], tail[len(MAGIC) : len(MAGIC) + 64]
    differ = sum(a != b for a, b in zip(head, MAGIC, strict=True))
    if differ > 4:  # no trailer: the end of an HDF5 file never comes that close to MAGIC
        return "unsealed"
    if differ or not _HEX.match(digest):
        return "damaged"
    return "intact" if sha256_of(path, size - TRAILER_LEN) == digest.decode() else "damaged"


def seal(path: str | Path) -> None:
    """Append the trailer to ``path`` (nothing when it already ends in an intact one)."""
    path = Path(path)
    if seal_status(path) == "intact":
        return
    digest = sha256_of(path)
    with path.open("ab") as fh:
        fh.write(MAGIC + digest.encode() + b"\n")


def write_manifest(folder: str | Path) -> None:
    """``folder/SHA256SUMS``: one line per file below ``folder`` (sorted relative paths)."""
    folder = Path(folder)
    lines = [
        f"{sha256_of(p)}  {p.relative_to(folder).as_posix()}\n"
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]
    (folder / MANIFEST).write_text("".join(lines))


def _listed(manifest: Path) -> dict[str, str] | str:
    """name -> SHA-256 of a manifest, or what is wrong with it."""
    try:
        lines = manifest.read_text().splitlines()
    except (OSError, ValueError):
        return f"{manifest} is unreadable"
    listed: dict[str, str] = {}
    for line in lines:
        match = _LINE.match(line)
        if match is None or ".." in Path(match.group(2)).parts:
            return f"{manifest} is damaged (line {line[:40]!r})"
        listed[match.group(2)] = match.group(1)
    return listed


def manifest_problem(folder: str | Path, names: tuple[str, ...] | None = None) -> str | None:
    """What does not match ``folder/SHA256SUMS`` (its files, or only ``names``), as a phrase;
    None when everything matches or the folder has no manifest. Files it does not list are no
    concern of it."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        return None
    listed = _listed(manifest)
    if isinstance(listed, str):
        return listed
    for name in sorted(listed if names is None else names):
        if name not in listed:
            return f"{folder / name} is not listed in {manifest}"
        if not (folder / name).is_file():
            return f"{folder / name}, listed in {manifest}, is missing"
        if sha256_of(folder / name) != listed[name]:
            return f"{folder / name} does not match its SHA-256 in {manifest}"
    return None

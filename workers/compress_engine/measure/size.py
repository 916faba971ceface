"""File size and content hash."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_size(path: Path) -> int:
    return Path(path).stat().st_size


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()

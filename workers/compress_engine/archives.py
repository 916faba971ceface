"""Zip archives from users, opened without trusting them.

One place for the checks every upload archive gets (model zips, SavedModels, TorchScript
and torch.export archives): member count, total unpacked size and compression ratio, member
names that stay inside the destination, no links; and an extractor that writes no more than
each member declares.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from compress_engine.errors import EngineError, short_message

MAX_MEMBERS = 10_000
# Unpacked bytes per stored byte above which an archive is refused as a zip bomb, once it
# unpacks to more than BOMB_FLOOR_BYTES. Deflate tops out near 1032:1; weights, images and
# even heavily pruned models stay far below 100:1.
MAX_RATIO = 100
BOMB_FLOOR_BYTES = 256 * 1024**2
# A file name longer than this many bytes cannot be created (NAME_MAX on Linux and macOS).
MAX_NAME_BYTES = 255
# What zipfile and zlib raise on a damaged or hostile archive: a header that lies, a bad
# CRC, an unknown compression method, encryption, a truncated stream, names that are not
# UTF-8. All of them mean "this upload is broken", never a bug of ours.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def is_metadata(name: str) -> bool:
    """Folders and files macOS Finder adds to every zip it makes."""
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1] == ".DS_Store")


def inside(base: Path, relative: str, where: str = "the archive") -> Path:
    """`base / relative`, refusing anything that would end up outside `base`."""
    if not isinstance(relative, str):  # protobuf hands over non-UTF-8 strings as bytes
        raise EngineError(f"Refused the path {relative!r}: it is not valid UTF-8 text.")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise EngineError(f"Refused the path {_cut(relative)!r}: it points outside {where}.")
    if "\x00" in relative:
        raise EngineError(f"Refused the path {_cut(relative)!r}: it holds a NUL character.")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in pure.parts):
        raise EngineError(
            f"Refused the path {_cut(relative)!r}: a name in it is longer than "
            f"{MAX_NAME_BYTES} bytes."
        )
    return Path(base).joinpath(*pure.parts)


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_members(
    infos: Sequence[zipfile.ZipInfo], max_bytes: int | None, max_members: int = MAX_MEMBERS
) -> None:
    """Refuse archives with too many files, too big unpacked, or with members that name
    paths outside or are links."""
    if len(infos) > max_members:
        raise EngineError(
            f"The archive holds {len(infos):,} files, more than the {max_members:,} it may hold."
        )
    total = sum(i.file_size for i in infos)
    if max_bytes is not None and total > max_bytes:
        raise EngineError(
            f"The archive unpacks to {total / 1e6:.1f} MB, more than the limit of "
            f"{max_bytes / 1e6:.1f} MB."
        )
    packed = max(sum(i.compress_size for i in infos), 1)
    if total > BOMB_FLOOR_BYTES and total > MAX_RATIO * packed:
        raise EngineError(
            f"The archive unpacks to {total / 1e6:.1f} MB from {packed / 1e6:.1f} MB, "
            f"{total / packed:,.0f} times its size; archives compressed more than {MAX_RATIO}:1 "
            "are refused as zip bombs. If the data really is that repetitive, zip it without "
            "compression (zip -0)."
        )
    for info in infos:
        inside(Path("."), info.filename)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise EngineError(f"The archive member {info.filename!r} is a link; links are refused.")


def extract_checked(
    zf: zipfile.ZipFile, dest: Path, max_bytes: int | None, max_members: int = MAX_MEMBERS
) -> list[Path]:
    """Check every member, then extract the files (Finder metadata skipped); returns the
    written paths in archive order."""
    members = [m for m in zf.infolist() if not m.is_dir() and not is_metadata(m.filename)]
    check_members(members, max_bytes, max_members)
    written = []
    for member in members:
        target = inside(dest, member.filename)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                # At most the declared size: a lying header cannot fill the disk.
                shutil.copyfileobj(_Bounded(src, member.file_size), out, 1 << 20)
        except ZIP_ERRORS as exc:
            # A corrupt member, or names that clash (a file and a folder of the same name).
            raise EngineError(
                f"The archive member {_cut(member.filename)!r} cannot be unpacked: "
                f"{short_message(exc, 200)}"
            ) from None
        written.append(target)
    return written


class _Bounded:
    def __init__(self, src: IO[bytes], limit: int) -> None:
        self.src, self.left = src, limit

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        chunk = self.src.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(chunk)
        return chunk

"""`aigi prepare`: unpack training archives safely into a REAL/FAKE folder layout.

Archives are found recursively (``os.walk``); archives inside archives are unpacked
too. Every archive is checked in full before anything is written: an absolute path,
a ``..`` component, a link or a device file rejects the whole archive
(:class:`UnsafeArchiveError`). Files are named by the sha256 of their bytes, so a
second run writes nothing new (idempotent) and byte-identical duplicates collapse
into one file, which keeps duplicates from straddling the train/validation split.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CLASS_NAMES = ("REAL", "FAKE")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
MAX_NESTING = 4


class PrepareError(Exception):
    """A data-preparation problem the user can fix (message says how)."""


class UnsafeArchiveError(PrepareError):
    """An archive holds a member that could write outside the destination."""


@dataclass
class PrepareReport:
    archives: list[str] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CLASS_NAMES})
    already_present: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CLASS_NAMES})
    skipped_non_image: int = 0
    skipped_unlabelled: int = 0

    def total(self, name: str) -> int:
        return self.written[name] + self.already_present[name]


def find_archives(src: Path) -> list[Path]:
    """Every ``.tar.gz``/``.tgz`` file at or under ``src``, sorted for determinism."""
    if src.is_file():
        return [src] if src.name.endswith(ARCHIVE_SUFFIXES) else []
    if not src.is_dir():
        raise PrepareError(f"{src} does not exist: give a folder or a .tar.gz archive")
    found: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(src):
        found.extend(Path(dirpath) / f for f in filenames if f.endswith(ARCHIVE_SUFFIXES))
    return sorted(found)


def class_of(member_path: str) -> str | None:
    """The class named by the innermost REAL/FAKE folder in a member's path."""
    parts = PurePosixPath(member_path).parts[:-1]
    for part in reversed(parts):
        upper = part.upper()
        if upper in CLASS_NAMES:
            return upper
    return None


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject anything but plain files and folders with relative, contained paths."""
    name = member.name
    where = f"{archive}: member {name!r}"
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise UnsafeArchiveError(f"{where} has an absolute path; refusing the archive")
    if ".." in PurePosixPath(name).parts:
        raise UnsafeArchiveError(f"{where} escapes the destination with '..'; refusing")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{where} is a link; archives with links are refused")
    if member.isdev() or member.isfifo():
        raise UnsafeArchiveError(f"{where} is a device or FIFO; refusing the archive")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{where} is not a regular file or folder; refusing")
    # Python's own 'data' filter as a second line of defence (mode bits, etc.).
    tarfile.data_filter(member, "/nonexistent-destination")


def _open(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PrepareError(f"{archive} is not a readable tar archive: {exc}") from exc


def _members(archive: Path) -> list[tarfile.TarInfo]:
    with _open(archive) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PrepareError(f"{archive} is truncated or corrupt: {exc}") from exc
    for member in members:
        check_member(member, archive)
    return members


def _iter_files(archive: Path, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """Yield ``(path, bytes)`` for each regular file, descending into nested archives.

    Nested members keep their outer path as a prefix, so a nested archive stored under
    ``FAKE/`` labels its images FAKE even if its own folders carry no class name.
    """
    if depth > MAX_NESTING:
        raise UnsafeArchiveError(f"{archive}: archives nested deeper than {MAX_NESTING}")
    _members(archive)  # validate everything before reading any file
    with _open(archive) as tar:
        for member in tar:
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            data = handle.read()
            if member.name.endswith(ARCHIVE_SUFFIXES):
                with tempfile.NamedTemporaryFile(suffix=".tar.gz") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    prefix = str(PurePosixPath(member.name).parent)
                    for inner, payload in _iter_files(Path(tmp.name), depth + 1):
                        yield f"{prefix}/{inner}", payload
            else:
                yield member.name, data


def prepare(
    src: Path,
    dest: Path,
    progress: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Unpack every archive under ``src`` into ``dest/REAL`` and ``dest/FAKE``."""
    archives = find_archives(src)
    if not archives:
        raise PrepareError(f"no .tar.gz archives found under {src}")
    report = PrepareReport()
    for name in CLASS_NAMES:
        (dest / name).mkdir(parents=True, exist_ok=True)
    for archive in archives:
        if progress:
            progress(str(archive))
        counts = {c: 0 for c in CLASS_NAMES}
        for member_path, data in _iter_files(archive):
            suffix = PurePosixPath(member_path).suffix.lower()
            if suffix not in IMAGE_SUFFIXES:
                report.skipped_non_image += 1
                continue
            label = class_of(member_path)
            if label is None:
                report.skipped_unlabelled += 1
                continue
            counts[label] += 1
            digest = hashlib.sha256(data).hexdigest()[:32]
            target = dest / label / f"{digest}{suffix}"
            if target.exists():
                report.already_present[label] += 1
                continue
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(target)
            report.written[label] += 1
        if not any(counts.values()):
            raise PrepareError(
                f"{archive} holds no images under a REAL/ or FAKE/ folder; "
                "put each class's images in a folder named REAL or FAKE"
            )
        report.archives.append(str(archive))
    return report

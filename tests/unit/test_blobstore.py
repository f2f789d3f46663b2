"""The local blob store: content in files, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.blobstore import BlobNotFoundError, LocalBlobStore, image_key, sha256_hex


def test_put_creates_the_folder_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"\x89PNG fake"
    key = image_key(sha256_hex(data))
    assert not store.exists(key)
    store.put(key, data)
    store.put(key, data)  # again, into the folder that now exists
    assert store.exists(key) and store.get(key) == data
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [key]


def test_missing_and_invalid_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFoundError):
        store.get("images/00/nothing")
    for key in ("", "/etc/passwd", "images/../../escape"):
        with pytest.raises(ValueError, match="invalid blob key"):
            store.put(key, b"x")
    store.delete("images/00/nothing")  # deleting what is not there is fine

"""Files that are never seen half-written, and content digests."""
import contextlib
import hashlib
import os
import uuid
from pathlib import Path

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside `path` to write to; it replaces `path` only if the block succeeds.

    A process killed or failing mid-write leaves `path` as it was (readers see the old file or
    the new one, never part of one) and at most a `.tmp-*` file beside it. The temporary name
    keeps `path`'s suffix, which Keras and NumPy choose the format by.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_of(*paths: str | Path) -> str:
    """The SHA-256 of the files' bytes, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            hashlib.file_digest(f, lambda: digest)
    return digest.hexdigest()

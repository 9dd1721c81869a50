"""The app's uploads: read with their size checked, and deleted as soon as their request is done
(or refused), with the folders Gradio made for them.
"""
import filecmp
import threading
import time
from collections import Counter
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from .inputs import LINK_STAND_IN

MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
# Gradio must write uploads to its temporary folder to hand them over. Each is deleted when its
# request is done; Gradio's own sweep (every minute, files over 10 minutes old, and all at
# shutdown) is only a backstop, since it stops for good if a request adds a file while it runs.
DELETE_UPLOADS = (60, 600)
# Gradio writes each file in a folder of its own and its sweep deletes only the file: folders left
# empty for this long are removed at each sweep (a younger one may be about to get its file).
EMPTY_FOLDER_AGE_S = 60
NO_LONGER_HERE = "This photo is no longer on the server (each upload is deleted once captioned): upload it again."


def read_upload(path: Path) -> bytes:
    """The upload's bytes, its size checked first; a clear message when it has already been deleted."""
    try:
        if path.stat().st_size > MAX_UPLOAD_BYTES:  # e.g. a file that reached Gradio's folder by another way
            raise gr.Error(f"Cannot caption this file: it is larger than {MAX_UPLOAD_MB} MB.", print_exception=False)
        return path.read_bytes()
    except FileNotFoundError:  # the page re-sent a photo captioned before, whose upload is gone
        raise gr.Error(NO_LONGER_HERE, print_exception=False) from None


def remove_empty_folders(root: Path) -> None:
    """Remove the empty folders directly in `root` that have been empty at least EMPTY_FOLDER_AGE_S."""
    now = time.time()
    for folder in root.iterdir() if root.is_dir() else []:
        try:
            if folder.is_dir() and not folder.is_symlink() and now - folder.stat().st_mtime > EMPTY_FOLDER_AGE_S:
                folder.rmdir()  # refused while the folder holds anything
        except OSError:
            pass


class CountedUploads(set):
    """Gradio's record of uploaded files (Blocks.upload_file_set), counting the uploads of each.

    Gradio stores an upload under a folder named by its content, so people sending the same photo
    share one file: it may be deleted only when the last of their requests is done. Each upload
    adds one; each finished request takes one away. Files equal to one in `keep` (Gradio's copies
    of the examples, which a click sends again) are never deleted.

    Gradio's sweep (the backstop for uploads whose request never ran) iterates this set in a
    thread while uploads add to it: a plain set raises "changed size during iteration" there,
    which ends the sweep for good. Iteration goes over a snapshot instead. Each sweep ends by
    taking what it deleted out of the set, and then the folders left empty go too.
    """

    def __init__(self, *args, keep: Path | None = None):
        super().__init__(*args)
        self._uploads, self._lock, self.keep = Counter(), threading.Lock(), keep

    def __iter__(self):
        with self._lock:
            return iter(list(super().__iter__()))

    def update(self, *paths):  # Gradio's upload route adds each upload's files this way
        with self._lock:
            for group in paths:
                group = list(group)
                self._uploads.update(group)
                super().update(group)

    def __isub__(self, deleted):  # the end of each of Gradio's sweeps
        with self._lock:
            super().__isub__(deleted)
            for path in deleted:
                self._uploads.pop(path, None)
        remove_empty_folders(Path(get_upload_folder()))
        return self

    def release(self, path: str) -> bool:
        """Whether no upload of `path` is waiting for its request any more."""
        with self._lock:
            self._uploads[path] -= 1
            if self._uploads[path] > 0:
                return False
            del self._uploads[path]
            return True

    def done_with(self, upload: str) -> None:
        """A request is done with `upload`: delete it unless another request still needs it."""
        if upload != LINK_STAND_IN and self.release(upload):
            self._discard(Path(upload))

    def refused(self, paths: list[str]) -> None:
        """A request naming `paths` was turned away before it ran: it is done with its uploads."""
        uploads = Path(get_upload_folder()).resolve()
        for path in paths:
            if Path(path).resolve().is_relative_to(uploads):
                self.done_with(path)

    def _is_kept(self, path: Path) -> bool:
        kept = self.keep / path.name if self.keep else None
        return kept is not None and kept.is_file() and path.is_file() and filecmp.cmp(path, kept, shallow=False)

    def _discard(self, path: Path) -> None:
        """Delete a finished request's upload (and its folder, when empty), as the page promises."""
        uploads = Path(get_upload_folder()).resolve()
        path = path.resolve()
        if not path.is_relative_to(uploads) or self._is_kept(path):
            return
        path.unlink(missing_ok=True)
        with self._lock:
            super().discard(str(path))
        if path.parent != uploads:
            try:
                path.parent.rmdir()  # Gradio puts each upload in a folder of its own
            except OSError:  # not empty, or already gone
                pass

"""What every tab's handler shares, so that a new tab inherits it: a photo read from its upload
(links refused, size checked, a bad file told to the user without a traceback), the request
timed for admission, its uploads released and freed memory given back when it is done.
"""
import contextlib
from pathlib import Path

import gradio as gr

from pipeline.captioner import Failure
from pipeline.images import ImageError

from .admission import ServiceTimes
from .inputs import LINK_STAND_IN, NO_LINKS
from .memory import give_back_freed_memory
from .uploads import CountedUploads, read_upload


class TabRequests:
    """The uploads and handler times that all of a page's tabs share (the same photo may be in
    a request of each); each tab names its queue (its concurrency group)."""

    def __init__(self, uploads: CountedUploads, times: ServiceTimes):
        self.uploads, self.times = uploads, times

    @contextlib.contextmanager
    def releasing(self, photos: list[str]):
        """A request with the uploads `photos`: each released when it is done, whatever happened."""
        try:
            yield
        finally:
            for photo in photos:
                self.uploads.done_with(photo)
            give_back_freed_memory()

    def timed(self, queue: str):
        """The request's work, timed for `queue`'s admission (not its refusals, which cost nothing)."""
        return self.times.measure(queue)

    @staticmethod
    def photo_bytes(photo: str) -> bytes:
        """The uploaded photo's bytes (not its path: error messages never show the server's upload folder)."""
        if photo == LINK_STAND_IN:
            raise gr.Error(NO_LINKS, print_exception=False)
        return read_upload(Path(photo))

    @contextlib.contextmanager
    def users_file(self):
        """A file that is not an image is the user's, not a fault: a message, no traceback in the server's log."""
        try:
            yield
        except ImageError as error:
            raise gr.Error(f"Cannot caption this file: {error}", print_exception=False) from None

    @classmethod
    def pixels_or_failure(cls, captioner, photo: str):
        """One photo of a batch as the encoder's input, or a Failure saying why (a link, too large, gone, not an image)."""
        try:
            return captioner.preprocess(cls.photo_bytes(photo))
        except gr.Error as error:
            return Failure(error.message)

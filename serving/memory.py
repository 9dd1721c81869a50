"""Giving the memory a request freed back to the system.

glibc keeps what a thread frees in that thread's arena for its next allocation: after a batch of
32 photos of 31 megapixels (250 MB each to decode) the app held 888 MB with nothing left to do,
and 741 MB once trimmed (load_test.py costly-batch, one run each). Gradio's handlers run in a pool
of threads, so each may keep an arena of its own; trimming after each request keeps what the
app holds close to what it uses.
"""
import ctypes
import ctypes.util

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def give_back_freed_memory() -> None:
    """Return freed heap memory to the system, where the C library can (glibc's malloc_trim)."""
    if _malloc_trim is not None:
        _malloc_trim(0)

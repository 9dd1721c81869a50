"""Giving the memory a request freed back to the system.

glibc keeps what a thread frees in that thread's arena for its next allocation: after a batch of
32 photos of 31 megapixels (250 MB each to decode) the app held 888 MB with nothing left to do,
and 741 MB once trimmed (load_test.py costly-batch, one run each). Gradio's handlers run in a pool
of up to 40 threads, and glibc gives them up to 8 arenas a core, each keeping its own free memory:
under 10 minutes of mixed load the memory in use grew 22% past its first minute. So the app uses
two arenas (limit_arenas, before its threads start) and trims after each request.
"""
import ctypes
import ctypes.util

_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name) if _libc_name else None
_malloc_trim = getattr(_libc, "malloc_trim", None)
_mallopt = getattr(_libc, "mallopt", None)
M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> None:
    """Let glibc's malloc keep at most `arenas` arenas (threads share them), where it is glibc."""
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, arenas)


def give_back_freed_memory() -> None:
    """Return freed heap memory to the system, where the C library can (glibc's malloc_trim)."""
    if _malloc_trim is not None:
        _malloc_trim(0)

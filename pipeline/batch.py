"""Captioning many photos: finding them, one record per photo, and captioning batches with the
encoder never waiting for image decoding (caption.py's local engine), or in slices (the app's
batch tab). Each photo goes through the Captioner's batch forms, as on Ray (pipeline/ray_engine.py).
"""
import glob
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .beam_search import DEFAULT_BEAM_SIZE
from .captioner import Captioner, Description, Failure

# What a folder is searched for: every extension Pillow can open (explicit files are taken whatever
# their name, and a non-image among them gets an error record).
IMAGE_SUFFIXES = frozenset(ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)
LIST_PREFIX = "@"
GLOB_CHARACTERS = frozenset("*?[")
# Batches decoded ahead of the encoder: enough that it never waits, few enough that memory stays
# small (a batch of 32 is 8.6 MB of pixels).
BATCHES_AHEAD = 2


class PhotoListError(ValueError):
    """An argument names no photo (a missing file or folder, a pattern with no match, a bad list)."""


def _photos_in_folder(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in name order; hidden files and folders are skipped.

    Links to folders are followed, but each folder is entered once, by the first way found to it
    (identified by device and inode): a link to a folder above, or to itself, would otherwise be
    walked forever.
    """
    found, entered = [], set()
    for parent, folders, files in os.walk(folder, followlinks=True):
        here = os.stat(parent)
        if (here.st_dev, here.st_ino) in entered:  # reached again by another link: walked already
            folders[:] = []
            continue
        entered.add((here.st_dev, here.st_ino))
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [Path(parent, name) for name in sorted(files)
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return found


def _read_list(list_file: Path) -> list[str]:
    """The entries of a list file: one a line; blank lines and lines starting with # are skipped;
    relative entries are relative to the list file's folder."""
    try:
        lines = list_file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as error:
        raise PhotoListError(f"cannot read the list {list_file}: {error.strerror}") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [str(list_file.parent / entry) for entry in entries]


def _expand(argument: str) -> list[Path]:
    path = Path(argument).expanduser()
    if path.is_dir():
        return _photos_in_folder(path)
    if path.is_file():
        return [path]
    if GLOB_CHARACTERS & set(argument):
        return [photo for match in sorted(glob.glob(str(path), recursive=True)) for photo in _expand(match)]
    return []


def find_photos(arguments: Iterable[str]) -> list[str]:
    """The photos that `arguments` name, as absolute paths, each file once, in the order given.

    An argument is a file, a folder (searched recursively for IMAGE_SUFFIXES), a glob pattern
    (`**` crosses folders) or `@LIST`, a text file of such entries. The same file reached twice (by
    two arguments, a symbolic link, or a folder and by name) is kept at its first place.
    Raises PhotoListError for an argument that names nothing, so a typo does not go unnoticed.
    """
    photos, seen, unmatched = [], set(), []
    todo = deque(arguments)
    while todo:
        argument = todo.popleft()
        if argument.startswith(LIST_PREFIX):
            todo.extendleft(reversed(_read_list(Path(argument[len(LIST_PREFIX):]).expanduser())))
            continue
        found = _expand(argument)
        if not found:
            unmatched.append(argument)
        for path in found:
            identity = os.path.realpath(path)
            if identity not in seen:
                seen.add(identity)
                photos.append(os.path.abspath(path))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        raise PhotoListError(f"no such file or folder, and no match: {shown}")
    return photos


def caption_record(path: str, result: Description | Failure | None, n_best: int) -> dict:
    """The output record of one photo from its Description, or from its Failure: its best
    caption, its familiarity (None for a model without one), `error` (why it has no caption) and,
    with `n_best`, the n-best captions with the probability the model gives each. Every record
    has every key (None: the keys alone)."""
    described = isinstance(result, Description)
    record = {"path": path, "caption": result.caption if described else None,
              "familiarity": None if not described or result.familiarity is None else round(result.familiarity, 4),
              "unfamiliar": result.unfamiliar if described and result.familiarity is not None else None,
              "error": result.reason if isinstance(result, Failure) else None}
    if n_best:
        record["n_best"] = [{"caption": c.text, "probability": c.probability}
                            for c in (result.n_best if described else [])[:n_best]]
    return record


def _batches(items: list, size: int) -> Iterator[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


def caption_in_slices(captioner: Captioner, sources: list, load: Callable[[object], np.ndarray | Failure],
                      beam_size: int, slice_size: int) -> list[Description | Failure]:
    """Captioner.describe_batch over `sources`, `slice_size` at a time: each slice is loaded (`load`:
    a source to pixels, or a Failure), encoded and searched before the next is loaded, so a
    batch holds one slice's decoding and one encoder pass of `slice_size` images at most, and
    another request waits for one slice's encoder pass, not the whole batch's."""
    results = []
    for part in _batches(sources, slice_size):
        results += captioner.describe_batch([load(source) for source in part], beam_size)
    return results


def caption_files(captioner: Captioner, paths: list[str], write: Callable[[list[dict]], None], *,
                  batch_size: int = 32, beam_size: int = DEFAULT_BEAM_SIZE, n_best: int = 0,
                  loaders: int | None = None) -> None:
    """Caption `paths` batch by batch, handing each batch's records to `write` in order.

    Threads decode and resize the next batches (Pillow releases the GIL) while the encoder runs
    on the current one, so it never waits for them; each batch's captions come from one beam search,
    run in a thread of its own while the encoder takes the next batch: the search is one core's
    Python and small products, and left on the main thread it cost 10% of the throughput with the
    two-decoder ensemble (bench.py --throughput: 0.896x the encoder alone).
    """
    with ThreadPoolExecutor(loaders or os.cpu_count(), thread_name_prefix="load") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="search") as search:
        batches = _batches(paths, batch_size)
        ahead = deque()

        def submit_next():
            batch = next(batches, None)
            if batch is not None:
                ahead.append((batch, [pool.submit(captioner.preprocess, path) for path in batch]))

        def records(batch, loaded, features):
            results = captioner.describe_batch(loaded, beam_size, n_best, features)
            return [caption_record(path, result, n_best) for path, result in zip(batch, results)]

        for _ in range(BATCHES_AHEAD):
            submit_next()
        searching = None  # the previous batch's records, being searched
        while ahead:
            batch, futures = ahead.popleft()
            submit_next()
            loaded = [f.result() for f in futures]
            features = captioner.encode_batch(loaded)
            if searching is not None:
                write(searching.result())
            searching = search.submit(records, batch, loaded, features)
        if searching is not None:
            write(searching.result())

"""Image features on disk: computed once per encoder, resumable, shared by training, evaluation and bench."""
import logging
import os
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .files import TMP_PREFIX, atomic_path, sha256_of

log = logging.getLogger(__name__)

CACHE_ENV = "CAPTION_CACHE_DIR"
# A part's temporary file lives for the second np.savez takes; one this old was left by a crash.
STALE_TMP_SECONDS = 3600
# The Ray pass commits what has come back at least this often, whatever the chunk size: a killed
# run loses at most this much of the cluster's work
COMMIT_EVERY_S = 20


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "flickr8k-captioner"))


def content_key(path: Path) -> str:
    """An image's cache key: the SHA-256 of its bytes.

    Not its name, so a replaced image is encoded again; and not its size and modification time
    either, which an unzip, `cp -p` or `rsync -a` of a new copy of the data carries over
    unchanged. Hashing the 8,000 Flickr8k images takes about a second; encoding one takes 0.1 s.
    """
    return sha256_of(path)


class FeatureCache:
    """Features per image content key, stored as .npz parts that are written atomically.

    Each finished chunk is its own part, so an interrupted extraction keeps what it did and
    resumes with the images still missing. The folder is keyed by the encoder's cache key.
    A part that cannot be read (corrupt, or from the older name-keyed format) is removed with a
    warning, and its images are encoded again.
    """

    def __init__(self, root: str | Path, key: str):
        self.dir = Path(root) / "features" / key
        self.features: dict[str, np.ndarray] = {}
        self._remove_stale_temporary_parts()
        for part in sorted(self.dir.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as data:
                    self.features.update(zip(data["keys"].tolist(), data["features"]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                log.warning("feature cache: removing unreadable part %s (%s: %s); its images will be "
                            "encoded again", part.name, type(error).__name__, error)
                part.unlink(missing_ok=True)

    def _remove_stale_temporary_parts(self) -> None:
        # only old ones: a fresh one may be another process's part being written right now
        for tmp in self.dir.glob(f"{TMP_PREFIX}*"):
            try:
                if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
            except FileNotFoundError:  # another process opening the same cache removed it first
                pass

    def add(self, keys: list[str], features: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # unique, so two processes filling one cache never collide
        with atomic_path(self.dir / f"part-{uuid.uuid4().hex}.npz") as tmp:
            # a grid in float16: Flickr8k's 8,091 grids are 3.3 GB so, and float16 holds Xception's
            # activations (post-ReLU, under 100) to 3 significant digits
            np.savez(tmp, keys=np.array(keys), features=features.astype(np.float16 if features.ndim == 3 else np.float32))
        self.features.update(zip(keys, features))

    def get(self, keys) -> np.ndarray:
        return np.stack([self.features[k] for k in keys])


def extract_features(encoder, image_dir: Path, names, cache_root: str | Path | None = None,
                     batch_size: int = 32, chunk_size: int = 512, engine: str = "local",
                     actors: int | None = None) -> np.ndarray:
    """Features for `names` (files in `image_dir`), computing only those not cached yet.

    engine "local" encodes here; "ray" on a Ray pool of copies of `encoder` (pipeline/ray_engine.py),
    whose features come back to this process and are cached here, keyed as the local pass keys them.
    Either way each finished chunk is committed as it is done, so a killed run resumes with it.
    """
    cache = FeatureCache(cache_root or default_cache_dir(), encoder.cache_key())
    keys = {name: content_key(Path(image_dir) / name) for name in dict.fromkeys(names)}
    todo = {key: name for name, key in keys.items() if key not in cache.features}  # one per content
    if todo:
        log.info("extracting features of %d image(s) into %s (%d already cached), engine %s",
                 len(todo), cache.dir, len(keys) - len(todo), engine)
        pending = list(todo.items())
        with tqdm(total=len(pending), desc="image features", unit="img") as bar:
            for chunk_keys, features in _encoded_chunks(encoder, image_dir, pending, batch_size, chunk_size, engine,
                                                        actors):
                cache.add(chunk_keys, features)
                bar.update(len(chunk_keys))
    return cache.get([keys[name] for name in names])


def _encoded_chunks(encoder, image_dir: Path, pending: list[tuple[str, str]], batch_size: int, chunk_size: int,
                    engine: str, actors: int | None):
    """(keys, features) of `pending` (key, name) pairs, a chunk of about `chunk_size` at a time."""
    if engine == "local":
        for i in range(0, len(pending), chunk_size):
            chunk_keys, chunk_names = zip(*pending[i:i + chunk_size])
            yield list(chunk_keys), encoder.encode([Path(image_dir) / n for n in chunk_names], batch_size)
        return
    if engine != "ray":
        raise ValueError(f"engine must be local or ray, got {engine!r}")
    from .ray_engine import encode_with_ray

    key_of = {str(Path(image_dir) / name): key for key, name in pending}
    done_keys, done, committed = [], [], time.monotonic()
    for paths, features in encode_with_ray(encoder, list(key_of), batch_size=batch_size, actors=actors):
        done_keys += [key_of[path] for path in paths]
        done.append(features)
        if len(done_keys) >= chunk_size or time.monotonic() - committed > COMMIT_EVERY_S:
            yield done_keys, np.concatenate(done)
            done_keys, done, committed = [], [], time.monotonic()
    if done_keys:
        yield done_keys, np.concatenate(done)


def features_or_exit(encoder, image_dir: Path, names, args) -> np.ndarray:
    """extract_features as an entry point's --cache-dir, --engine and --actors ask, exiting with the
    reason when the Ray cluster cannot run it."""
    from .ray_engine import ClusterError
    try:
        return extract_features(encoder, image_dir, names, args.cache_dir, engine=args.engine, actors=args.actors)
    except ClusterError as error:
        raise SystemExit(f"error: {error}") from None

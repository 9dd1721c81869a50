"""Image features on disk: computed once per encoder, resumable, shared by training, evaluation and bench."""
import logging
import os
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

CACHE_ENV = "CAPTION_CACHE_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "flickr8k-captioner"))


class FeatureCache:
    """Features per image name, stored as .npz parts that are written atomically.

    Each finished chunk is its own part, so an interrupted extraction keeps what it did and
    resumes with the images still missing. The folder is keyed by the encoder's cache key.
    """

    def __init__(self, root: str | Path, key: str):
        self.dir = Path(root) / "features" / key
        self.features: dict[str, np.ndarray] = {}
        for part in self.dir.glob("part-*.npz"):
            if part.name.endswith(".tmp.npz"):  # a write that crashed half-way
                continue
            with np.load(part, allow_pickle=False) as data:
                self.features.update(zip(data["names"].tolist(), data["features"]))

    def missing(self, names) -> list[str]:
        return [n for n in dict.fromkeys(names) if n not in self.features]

    def add(self, names: list[str], features: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        part = f"part-{uuid.uuid4().hex}"  # unique, so two processes filling one cache never collide
        np.savez(self.dir / f"{part}.tmp.npz", names=np.array(names), features=features.astype(np.float32))
        (self.dir / f"{part}.tmp.npz").rename(self.dir / f"{part}.npz")
        self.features.update(zip(names, features))

    def get(self, names) -> np.ndarray:
        return np.stack([self.features[n] for n in names])


def extract_features(encoder, image_dir: Path, names, cache_root: str | Path | None = None,
                     batch_size: int = 32, chunk_size: int = 512) -> np.ndarray:
    """Features for `names` (files in `image_dir`), computing only those not cached yet."""
    cache = FeatureCache(cache_root or default_cache_dir(), encoder.cache_key())
    todo = cache.missing(names)
    if todo:
        log.info("extracting features of %d image(s) into %s (%d already cached)",
                 len(todo), cache.dir, len(set(names)) - len(todo))
        with tqdm(total=len(todo), desc="image features", unit="img") as bar:
            for i in range(0, len(todo), chunk_size):
                chunk = todo[i:i + chunk_size]
                cache.add(chunk, encoder.encode([image_dir / n for n in chunk], batch_size))
                bar.update(len(chunk))
    return cache.get(names)

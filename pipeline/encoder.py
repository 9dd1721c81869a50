"""The image encoder: Keras' Xception (no top, average pooling) and an on-disk feature cache."""
import functools
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .images import load_image, to_model_input

log = logging.getLogger(__name__)

BACKBONE = "xception"
IMAGE_SIZE = 299
FEATURE_DIM = 2048
BACKBONE_WEIGHTS_ENV = "CAPTION_BACKBONE_WEIGHTS"
CACHE_ENV = "CAPTION_CACHE_DIR"
PREPROCESSING = "pil-bicubic-299+xception.preprocess_input"  # part of the cache key


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "flickr8k-captioner"))


def resolve_backbone_weights(weights: str | None = None) -> str:
    """'imagenet' (Keras downloads it), 'none' (random, for tests) or a local weights file.

    An explicit argument wins, then $CAPTION_BACKBONE_WEIGHTS, then 'imagenet'.
    """
    weights = weights or os.environ.get(BACKBONE_WEIGHTS_ENV) or "imagenet"
    if weights.lower() in ("imagenet", "none"):
        return weights.lower()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path} (from --backbone-weights or "
                                f"${BACKBONE_WEIGHTS_ENV}); build one with shared/tools/xception_imagenet_weights.py")
    return str(path.resolve())


class ImageEncoder:
    """Xception features for batches of images, compiled once as a tf.function."""

    def __init__(self, weights: str | None = None):
        import keras
        import tensorflow as tf

        self.weights = resolve_backbone_weights(weights)
        if self.weights == "none":
            keras.utils.set_random_seed(0)  # the same random backbone every time, so its cache stays valid
        log.info("building %s backbone (weights: %s)", BACKBONE, self.weights)
        self.model = keras.applications.Xception(
            include_top=False, pooling="avg", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            weights=None if self.weights == "none" else self.weights)
        preprocess = keras.applications.xception.preprocess_input
        model = self.model

        # Eager Keras calls cost about twice the graph's time on CPU; the fixed signature traces once.
        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8)])
        def encode(pixels):
            return model(preprocess(tf.cast(pixels, tf.float32)), training=False)

        self._encode = encode.get_concrete_function()  # called directly: no argument binding per call

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._encode(pixels).numpy()

    def encode(self, images, batch_size: int = 32) -> np.ndarray:
        """Features (N, 2048) for images given as paths, bytes, PIL images or arrays."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = np.stack([to_model_input(load_image(im), IMAGE_SIZE) for im in images[i:i + batch_size]])
            out.append(self.encode_pixels(pixels))
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the backbone by its weight values, so the same weights from Keras' download
        or from a local file (whatever its name) match, and any other weights do not."""
        digest = hashlib.sha256()
        for variable in self.model.weights:
            digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
        return digest.hexdigest()[:16]

    def cache_key(self) -> str:
        spec = {"backbone": BACKBONE, "weights": self.fingerprint,
                "image_size": IMAGE_SIZE, "preprocessing": PREPROCESSING}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


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


def extract_features(encoder: ImageEncoder, image_dir: Path, names, cache_root: str | Path | None = None,
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

"""Image encoders: pixels in, features out (one vector, or a grid of regions: POOLINGS).

`PixelEncoder` holds what every encoder runtime shares (decoding images, batching); `KerasEncoder`
is the Keras Xception (no top) that training extracts features with and that
export_encoder.py exports. TensorFlow is imported only when a KerasEncoder is built. The runtimes,
by name, are in pipeline/encoder_runtimes.py.
"""
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .images import load_image, to_model_input

log = logging.getLogger(__name__)

BACKBONE = "xception"
IMAGE_SIZE = 299
FEATURE_DIM = 2048
# What an encoder gives per image. Xception's last feature map at IMAGE_SIZE is 10x10 regions of
# FEATURE_DIM values: "avg" pools it to one vector (the merge decoder's input), "grid" keeps the
# regions (attention's), whose mean is that vector, so one pass serves both.
POOLINGS = ("avg", "grid")
GRID_REGIONS = 100
# Xception's exit flow (blocks 13-14: 6.8M of its 20.9M weights, about 2 of its 17 GFLOPs a photo),
# from its first layer to its last before any pooling: the part train.py --tune-exit-flow trains.
EXIT_FLOW_FIRST, EXIT_FLOW_LAST = "block13_sepconv1_act", "block14_sepconv2_act"
BACKBONE_WEIGHTS_ENV = "CAPTION_BACKBONE_WEIGHTS"
PREPROCESSING = "pil-bicubic-299+xception.preprocess_input"  # part of the cache key
RUNTIME = "keras"


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


class PixelEncoder:
    """Features for images given as paths, bytes, PIL images or arrays; subclasses encode pixels.

    Subclasses set `fingerprint` (the backbone weights the features come from, as the decoder's
    model folder names them), `name` (runtime and precision, for reports) and `source` (where its
    weights were read from, for messages), and implement encode_pixels, cache_key, spec and
    from_spec.
    """
    fingerprint: str
    name: str
    source: str
    pooling: str = "avg"

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, IMAGE_SIZE, IMAGE_SIZE, 3) uint8 RGB -> float32 (N, FEATURE_DIM), or with pooling
        "grid" (N, GRID_REGIONS, FEATURE_DIM)."""
        raise NotImplementedError

    def cache_key(self) -> str:
        raise NotImplementedError

    def spec(self) -> dict:
        """What from_spec rebuilds this encoder from, in another process (a Ray actor): plain JSON
        values, with the runtime's name (pipeline/encoder_runtimes.py) under "runtime"."""
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: dict) -> "PixelEncoder":
        raise NotImplementedError

    def encode(self, images, batch_size: int = 32) -> np.ndarray:
        """Features (encode_pixels') for images given as paths, bytes, PIL images or arrays."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = np.stack([to_model_input(load_image(im), IMAGE_SIZE) for im in images[i:i + batch_size]])
            out.append(self.encode_pixels(pixels))
        return np.concatenate(out) if out else np.zeros((0, *feature_shape(self.pooling)), np.float32)


def feature_shape(pooling: str) -> tuple[int, ...]:
    return (GRID_REGIONS, FEATURE_DIM) if pooling == "grid" else (FEATURE_DIM,)


def pooled(features: np.ndarray) -> np.ndarray:
    """One vector per image, whichever POOLINGS gave `features`: a grid's mean over its regions is
    Xception's average pooling."""
    features = np.asarray(features)
    return features.mean(axis=1, dtype=np.float32) if features.ndim == 3 else features


def cache_key(**spec) -> str:
    """A short key for a feature cache folder: features differ whenever any of `spec` does."""
    spec.update(image_size=IMAGE_SIZE, preprocessing=PREPROCESSING)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def exit_flow(backbone):
    """The Keras backbone's exit flow as a model of its own, sharing the backbone's layers (and so
    its weights): the 19x19x728 activations entering it in, the 10x10x2048 map out."""
    import keras

    return keras.Model(backbone.get_layer(EXIT_FLOW_FIRST).input, backbone.get_layer(EXIT_FLOW_LAST).output,
                       name="exit_flow")


class KerasEncoder(PixelEncoder):
    """Keras' Xception features for batches of images, compiled once as a tf.function; `pooling`
    one of POOLINGS; `exit_flow_weights`: a Keras weights file of the exit flow that replaces the
    backbone's (a model folder's tuned one, pipeline/artifact.py)."""
    name = "keras float32"

    def __init__(self, weights: str | None = None, pooling: str = "avg", exit_flow_weights: str | Path | None = None):
        import keras
        import tensorflow as tf

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone_weights = self.source = resolve_backbone_weights(weights)
        self.pooling = pooling
        if self.source == "none":
            keras.utils.set_random_seed(0)  # the same random backbone every time, so its cache stays valid
        log.info("building %s backbone (weights: %s)", BACKBONE, self.source)
        self.model = keras.applications.Xception(
            include_top=False, pooling="avg" if pooling == "avg" else None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            weights=None if self.source == "none" else self.source)
        self.exit_flow_weights = str(exit_flow_weights) if exit_flow_weights else None
        if self.exit_flow_weights:
            exit_flow(self.model).load_weights(self.exit_flow_weights)
            self.source = f"{self.source} with the exit flow of {self.exit_flow_weights}"
        preprocess, model, shape = keras.applications.xception.preprocess_input, self.model, feature_shape(pooling)
        self._forward = lambda pixels: tf.reshape(model(preprocess(tf.cast(pixels, tf.float32)), training=False),
                                                  (-1, *shape))
        self._signature = [tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name="pixels")]
        # Eager Keras calls cost about twice the graph's time on CPU; the fixed signature traces once,
        # and the concrete function is called directly: no argument binding per call.
        self._encode = tf.function(self._forward, input_signature=self._signature).get_concrete_function()

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._encode(pixels).numpy()

    def export_saved_model(self, path: str | Path) -> None:
        """This encoder as a TensorFlow SavedModel, preprocessing included (uint8 pixels in, features
        out): what the serving runtimes convert. Keras 3 reaches them through a SavedModel."""
        import keras

        archive = keras.export.ExportArchive()
        archive.track(self.model)
        archive.add_endpoint("serve", self._forward, input_signature=self._signature)
        archive.write_out(str(path), verbose=False)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the backbone by its weight values, so the same weights from Keras' download
        or from a local file (whatever its name) match, and any other weights do not."""
        digest = hashlib.sha256()
        for variable in self.model.weights:
            digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
        return digest.hexdigest()[:16]

    def cache_key(self) -> str:
        grid = {"pooling": "grid"} if self.pooling == "grid" else {}  # the pooled caches' keys stay as they were
        return cache_key(backbone=BACKBONE, weights=self.fingerprint, **grid)

    def spec(self) -> dict:
        return {"runtime": RUNTIME, "backbone_weights": self.backbone_weights, "pooling": self.pooling,
                "exit_flow_weights": self.exit_flow_weights}

    @classmethod
    def from_spec(cls, spec: dict) -> "KerasEncoder":
        return cls(spec["backbone_weights"], spec.get("pooling", "avg"), spec.get("exit_flow_weights"))

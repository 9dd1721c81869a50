"""The model artifact (one folder: config.json, vocab.json, decoder.weights.h5) and `Captioner`."""
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import encoder as enc
from .beam_search import beam_search
from .decoder import ARCHITECTURE, DecoderSteps, build_decoder
from .vocab import Vocabulary

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "decoder.weights.h5"
ARTIFACT_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)


class ArtifactError(Exception):
    """A model folder is missing a file, holds a corrupt one, or its pieces disagree."""


def make_config(vocab_size: int, max_length: int, backbone_fingerprint: str, **extra) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "architecture": dict(ARCHITECTURE),
        "vocab_size": vocab_size,
        "max_length": max_length,
        "encoder": {"backbone": enc.BACKBONE, "image_size": enc.IMAGE_SIZE, "pooling": "avg",
                    "feature_dim": enc.FEATURE_DIM, "preprocessing": enc.PREPROCESSING,
                    "weights_fingerprint": backbone_fingerprint},
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        **extra,
    }


def save_artifact(folder: str | Path, model: keras.Model, vocab: Vocabulary, config: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # an uncompiled copy: a compiled model's weights file also holds the optimizer's state (3x the size)
    arch = config["architecture"]
    inference = build_decoder(config["vocab_size"], arch["units"], arch["embedding_dim"], arch["dropout"],
                              config["encoder"]["feature_dim"])
    inference.set_weights(model.get_weights())
    inference.save_weights(folder / WEIGHTS_FILE)
    vocab.save(folder / VOCAB_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ArtifactError(f"missing {path.name} in the model folder {path.parent}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is corrupt: {error}") from None


def load_artifact(folder: str | Path) -> tuple[keras.Model, Vocabulary, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"model folder not found: {folder}")
    config = _read_json(folder / CONFIG_FILE)
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{folder / CONFIG_FILE}: format_version {config.get('format_version')!r}, "
                            f"this code reads {FORMAT_VERSION}")
    try:
        vocab = Vocabulary(_read_json(folder / VOCAB_FILE)["tokens"])
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{folder / VOCAB_FILE} is not a vocabulary: {error}") from None
    if len(vocab) != config["vocab_size"]:
        raise ArtifactError(f"{folder}: vocab.json holds {len(vocab)} tokens but config.json says "
                            f"vocab_size={config['vocab_size']}; the files come from different models")
    arch = config["architecture"]
    model = build_decoder(len(vocab), arch["units"], arch["embedding_dim"], arch["dropout"],
                          config["encoder"]["feature_dim"])
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"missing {WEIGHTS_FILE} in the model folder {folder}")
    try:
        model.load_weights(weights)
    except Exception as error:  # h5py and Keras raise many types for a bad or mismatched file
        raise ArtifactError(f"{weights} could not be loaded into the decoder that config.json describes: "
                            f"{type(error).__name__}: {error}") from None
    return model, vocab, config


@dataclass(frozen=True)
class Caption:
    text: str
    log_prob: float

    @property
    def probability(self) -> float:
        return math.exp(self.log_prob)


def decode(steps: DecoderSteps, vocab: Vocabulary, features: np.ndarray, beam_size: int, max_length: int,
           n_best: int = 1) -> list[list[Caption]]:
    results = beam_search(steps.step, steps.initial_state(features), len(features), vocab.start_id,
                          vocab.end_id, beam_size, max_length, n_best,
                          banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id))
    return [[Caption(vocab.decode(h.tokens), h.log_prob) for h in hyps] for hyps in results]


class Captioner:
    """Image in, English caption out.

    >>> captioner = Captioner.from_pretrained("weights")
    >>> captioner.caption("photo.jpg", beam_size=3)
    """

    def __init__(self, model: keras.Model, vocab: Vocabulary, config: dict, image_encoder: enc.ImageEncoder):
        self.model, self.vocab, self.config, self.image_encoder = model, vocab, config, image_encoder
        self.steps = DecoderSteps(model)
        self.max_length = config["max_length"]
        if config["encoder"]["weights_fingerprint"] != image_encoder.fingerprint:
            log.warning("the decoder was trained on other backbone weights than %s (fingerprint %s, not %s); "
                        "captions will be poor", image_encoder.weights, image_encoder.fingerprint,
                        config["encoder"]["weights_fingerprint"])

    @classmethod
    def from_pretrained(cls, folder: str | Path, backbone_weights: str | None = None,
                        image_encoder: enc.ImageEncoder | None = None) -> "Captioner":
        """Load a model folder; the backbone comes from `backbone_weights`, the environment or ImageNet."""
        model, vocab, config = load_artifact(folder)
        if config["encoder"]["backbone"] != enc.BACKBONE:
            raise ArtifactError(f"{folder}: backbone {config['encoder']['backbone']!r} is not supported")
        return cls(model, vocab, config, image_encoder or enc.ImageEncoder(backbone_weights))

    def decode(self, features: np.ndarray, beam_size: int = 3, n_best: int = 1) -> list[list[Caption]]:
        """The n-best captions of each feature row, best first."""
        return decode(self.steps, self.vocab, features, beam_size, self.max_length, n_best)

    def generate(self, images, beam_size: int = 3, n_best: int = 1, batch_size: int = 32) -> list[list[Caption]]:
        out = []
        for i in range(0, len(images), batch_size):
            features = self.image_encoder.encode(images[i:i + batch_size], batch_size)
            out.extend(self.decode(features, beam_size, n_best))
        return out

    def caption(self, image, beam_size: int = 3) -> str:
        """`image`: a path, PIL image, bytes or HxWx3 array."""
        return self.generate([image], beam_size)[0][0].text

    def caption_batch(self, images, beam_size: int = 3, batch_size: int = 32) -> list[str]:
        return [best[0].text for best in self.generate(list(images), beam_size, 1, batch_size)]

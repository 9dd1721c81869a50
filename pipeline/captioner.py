"""`Captioner`: a model folder (pipeline/artifact.py) loaded for captioning, with NumPy and an encoder runtime.

The decoder always runs in NumPy. The image encoder comes from ENCODERS: the folder's exported
encoder (OpenVINO, no TensorFlow) or the Keras backbone it was exported from.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import threadpoolctl

from .artifact import (MAX_CENTROIDS, MAX_DEV_IMAGES, WEIGHTS_FILE, ArtifactError, check_npz, decoder_values,
                       folder_file, read_config, read_keras_weights, read_vocab)
from .beam_search import FluencyRules, beam_search
from .decoder import Steps, decoder_steps
from .encoder import BACKBONE, PixelEncoder
from .familiarity import FAMILIARITY_FILE, Familiarity
from .vocab import FUNCTION_WORDS, Vocabulary

log = logging.getLogger(__name__)


class BackboneError(RuntimeError):
    """The Keras backbone could not be built (its weights file is missing, or Keras' download failed)."""


def keras_encoder(folder: Path, config: dict, backbone_weights: str | None) -> PixelEncoder:
    """The Keras backbone (TensorFlow): what the decoder was trained on."""
    from .encoder import ImageEncoder
    try:
        return ImageEncoder(backbone_weights)
    except ImportError:
        raise
    except Exception as error:  # Keras raises a bare Exception when its download fails
        raise BackboneError(str(error)) from error


def exported_encoder(folder: Path, config: dict, backbone_weights: str | None) -> PixelEncoder:
    """The encoder exported into the folder, run by the runtime its config names."""
    exported = config["encoder"].get("exported")
    if exported is None:
        raise ArtifactError(f"{folder} carries no exported encoder: build one with `python export_encoder.py "
                            f"--weights {folder}` (requirements-train.txt), or use the Keras encoder")
    if exported["runtime"] != "openvino":
        raise ArtifactError(f"{folder / 'config.json'}: encoder runtime {exported['runtime']!r} is not supported")
    from .openvino_encoder import OpenVINOEncoder
    return OpenVINOEncoder(folder, exported, config["encoder"]["weights_fingerprint"])


# How a Captioner gets its image encoder: "auto" is the exported one when the folder has it.
ENCODERS = {"exported": exported_encoder, "keras": keras_encoder}
ENCODER_CHOICES = ("auto", *ENCODERS)


def load_image_encoder(folder: Path, config: dict, encoder: str = "auto",
                       backbone_weights: str | None = None) -> PixelEncoder:
    if encoder == "auto":
        encoder = "exported" if "exported" in config["encoder"] else "keras"
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODER_CHOICES}, got {encoder!r}")
    return ENCODERS[encoder](folder, config, backbone_weights)


def load_artifact(folder: str | Path) -> tuple[Steps, Vocabulary, dict]:
    """The folder's decoder (as NumPy steps), vocabulary and config, each checked against the others."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"model folder not found: {folder}")
    config = read_config(folder)
    vocab = read_vocab(folder, config)
    try:
        steps = decoder_steps(read_keras_weights(folder_file(folder, WEIGHTS_FILE), decoder_values(config)), config)
    except ValueError as error:
        raise ArtifactError(f"{folder / WEIGHTS_FILE} does not fit the decoder that config.json describes: "
                            f"{error}") from None
    return steps, vocab, config


def load_familiarity(folder: Path, config: dict) -> Familiarity | None:
    """The folder's familiarity calibration, if its config names one (folders from before have none)."""
    if "familiarity" not in config:
        return None
    feature_dim = config["encoder"]["feature_dim"]
    # each array's .npy: its values (float16 centroids are written; float32 would do) and a header
    check_npz(folder_file(folder, FAMILIARITY_FILE), {"centroids": MAX_CENTROIDS * feature_dim * 4 + 512,
                                                      "dev_distances": MAX_DEV_IMAGES * 8 + 512})
    try:
        familiarity = Familiarity.load(folder)
    except (OSError, KeyError, ValueError) as error:
        raise ArtifactError(f"{folder / FAMILIARITY_FILE} is not a familiarity calibration: "
                            f"{type(error).__name__}: {error}") from None
    if familiarity.centroids.shape[1] != config["encoder"]["feature_dim"]:
        raise ArtifactError(f"{folder / FAMILIARITY_FILE} was fitted on {familiarity.centroids.shape[1]}-wide "
                            f"features, the encoder gives {config['encoder']['feature_dim']}")
    return familiarity


@dataclass(frozen=True)
class Caption:
    text: str
    log_prob: float

    @property
    def probability(self) -> float:
        return math.exp(self.log_prob)


@dataclass(frozen=True)
class Description:
    """A photo's caption, the beam's n-best list, and how familiar the photo is to the model.

    familiarity: the share of dev photos at least as far from the training photos as this one
    (pipeline/familiarity.py), None for a model folder without a calibration; unfamiliar: below
    the folder's threshold, where the caption is likely a training-set sentence that does not fit.
    """
    caption: str
    n_best: list[Caption]
    familiarity: float | None
    unfamiliar: bool


def fluency_rules(vocab: Vocabulary) -> FluencyRules:
    """No word or two-word phrase twice, no ending on a function word (evaluate.py counts each)."""
    return FluencyRules(no_end_after=frozenset(vocab.index[w] for w in FUNCTION_WORDS if w in vocab.index))


def decode(steps: Steps, vocab: Vocabulary, features: np.ndarray, beam_size: int, max_length: int,
           n_best: int = 1, fluent: bool = True) -> list[list[Caption]]:
    """The n-best captions of each feature row; `fluent` applies fluency_rules (False: the model's own)."""
    results = beam_search(steps.step, steps.initial_state(features), len(features), vocab.start_id,
                          vocab.end_id, beam_size, max_length, n_best,
                          banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id),
                          rules=fluency_rules(vocab) if fluent else None)
    return [[Caption(vocab.decode(h.tokens), h.log_prob) for h in hyps] for hyps in results]


class Captioner:
    """Image in, English caption out.

    >>> captioner = Captioner.from_pretrained("weights")
    >>> captioner.caption("photo.jpg", beam_size=3)
    """

    def __init__(self, steps: Steps, vocab: Vocabulary, config: dict, image_encoder: PixelEncoder,
                 familiarity: Familiarity | None = None):
        self.steps, self.vocab, self.config, self.image_encoder = steps, vocab, config, image_encoder
        self.familiarity = familiarity
        self.max_length = config["max_length"]
        # NumPy's OpenBLAS threads spin a while after each product: beside the encoder's own threads on
        # a small CPU that slowed the next Xception pass by a third (bench.py). The decoder's products
        # are small; one thread is enough. threadpoolctl applies it whatever was imported first.
        threadpoolctl.threadpool_limits(1, user_api="blas")
        if config["encoder"]["weights_fingerprint"] != image_encoder.fingerprint:
            log.warning("the decoder was trained on other backbone weights than %s (fingerprint %s, not %s); "
                        "captions will be poor", image_encoder.weights, image_encoder.fingerprint,
                        config["encoder"]["weights_fingerprint"])

    @classmethod
    def from_pretrained(cls, folder: str | Path, backbone_weights: str | None = None,
                        image_encoder: PixelEncoder | None = None, encoder: str = "auto") -> "Captioner":
        """Load a model folder with the image encoder that `encoder` names (ENCODER_CHOICES).

        The Keras encoder's backbone comes from `backbone_weights`, the environment or ImageNet.
        """
        steps, vocab, config = load_artifact(folder)
        if config["encoder"]["backbone"] != BACKBONE:
            raise ArtifactError(f"{folder}: backbone {config['encoder']['backbone']!r} is not supported")
        image_encoder = image_encoder or load_image_encoder(Path(folder), config, encoder, backbone_weights)
        return cls(steps, vocab, config, image_encoder, load_familiarity(Path(folder), config))

    def warm_up(self) -> None:
        """Caption a blank photo once: runtimes set up their kernels on the first pass (OpenVINO's
        bf16 encoder took 0.13 s, then 0.07 s), which would otherwise slow the first request."""
        size = self.config["encoder"]["image_size"]
        self.describe(np.zeros((size, size, 3), np.uint8))

    def decode(self, features: np.ndarray, beam_size: int = 3, n_best: int = 1) -> list[list[Caption]]:
        """The n-best captions of each feature row, best first."""
        return decode(self.steps, self.vocab, features, beam_size, self.max_length, n_best)

    def generate(self, images, beam_size: int = 3, n_best: int = 1, batch_size: int = 32) -> list[list[Caption]]:
        out = []
        for i in range(0, len(images), batch_size):
            features = self.image_encoder.encode(images[i:i + batch_size], batch_size)
            out.extend(self.decode(features, beam_size, n_best))
        return out

    def describe(self, image, beam_size: int = 3) -> Description:
        """The caption, the `beam_size` best captions and the photo's familiarity."""
        return self.describe_features(self.image_encoder.encode([image], 1), beam_size)[0]

    def describe_features(self, features: np.ndarray, beam_size: int = 3, n_best: int | None = None) -> list[Description]:
        """A Description of each feature row, with its `n_best` (default beam_size) best captions."""
        captions = self.decode(features, beam_size, n_best or beam_size)
        if self.familiarity is None:
            return [Description(best[0].text, best, None, False) for best in captions]
        threshold = self.config["familiarity"]["unfamiliar_below"]
        return [Description(best[0].text, best, float(f), bool(f < threshold))
                for best, f in zip(captions, self.familiarity(features))]

    def caption(self, image, beam_size: int = 3) -> str:
        """`image`: a path, PIL image, bytes or HxWx3 array."""
        return self.generate([image], beam_size)[0][0].text

    def caption_batch(self, images, beam_size: int = 3, batch_size: int = 32) -> list[str]:
        return [best[0].text for best in self.generate(list(images), beam_size, 1, batch_size)]

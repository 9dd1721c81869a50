"""`Captioner`: a model folder (pipeline/artifact.py) loaded for captioning, with NumPy and an encoder runtime.

The decoder always runs in NumPy. The image encoder is the folder's exported one (run by the
runtime its config names, pipeline/encoder_runtimes.py: OpenVINO, no TensorFlow) or the Keras
backbone it was exported from.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import threadpoolctl

from .artifact import (CONFIG_FILE, WEIGHTS_FILE, ArtifactError, decoder_values, exit_flow_file, exported_encoder_files,
                       folder_file, read_config, read_familiarity, read_keras_weights, read_vocab)
from .beam_search import DEFAULT_BEAM_SIZE, FluencyRules, beam_search
from .decoder import Steps, decoder_steps
from .encoder import BACKBONE, PixelEncoder, pooled
from .encoder_runtimes import ENCODER_RUNTIMES
from .familiarity import Familiarity
from .images import ImageError, load_image, to_model_input
from .vocab import FUNCTION_WORDS, Vocabulary

log = logging.getLogger(__name__)


class BackboneError(RuntimeError):
    """The Keras backbone could not be built (its weights file is missing, or Keras' download failed)."""


def keras_encoder(folder: Path, config: dict, backbone_weights: str | None) -> PixelEncoder:
    """The Keras backbone (TensorFlow) that the decoder was trained on: from `backbone_weights`,
    with the folder's tuned exit flow when it has one."""
    from .encoder import KerasEncoder
    tuned = exit_flow_file(folder, config)
    try:
        return KerasEncoder(backbone_weights, config["encoder"].get("pooling", "avg"), tuned)
    except ImportError:
        raise
    except Exception as error:  # Keras raises a bare Exception when its download fails
        raise BackboneError(str(error)) from error


def exported_encoder(folder: Path, config: dict, backbone_weights: str | None) -> PixelEncoder:
    """The encoder exported into the folder, run by the runtime its config names."""
    exported = config["encoder"].get("exported")
    if exported is None:
        raise ArtifactError(f"{folder} carries no exported encoder: build one with `python export_encoder.py "
                            f"--model {folder}` (requirements-train.txt), or use the Keras encoder")
    files = exported_encoder_files(folder, exported)
    try:
        runtime = ENCODER_RUNTIMES[exported["runtime"]]
        return runtime.load_export(files, exported, config["encoder"]["weights_fingerprint"])
    except ValueError as error:  # a graph the runtime cannot compile
        raise ArtifactError(str(error)) from None


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
        raise ArtifactError(f"{folder / WEIGHTS_FILE} does not fit the decoder that {CONFIG_FILE} describes: "
                            f"{error}") from None
    return steps, vocab, config


@dataclass(frozen=True)
class Caption:
    """A caption and its log-probability; from an attention decoder, also where it looked for each
    word: `looked`, words x grid rows x grid columns of the weights the beam chose each word with
    (each word's sum to 1)."""
    text: str
    log_prob: float
    looked: np.ndarray | None = None

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


@dataclass(frozen=True)
class Failure:
    """A photo that has no caption, and why (not an image, truncated, unreadable, a link, ...)."""
    reason: str


def fluency_rules(vocab: Vocabulary) -> FluencyRules:
    """No word or two-word phrase twice, no ending on a function word (evaluate.py counts each)."""
    return FluencyRules(no_end_after=frozenset(vocab.index[w] for w in FUNCTION_WORDS if w in vocab.index))


def looks_at_regions(steps: Steps) -> bool:
    """Whether the decoder attends to a grid of regions, so that its captions carry where it looked."""
    return hasattr(steps, "attended_step")


def decode(steps: Steps, vocab: Vocabulary, features: np.ndarray, beam_size: int, max_length: int,
           n_best: int = 1, fluent: bool = True) -> list[list[Caption]]:
    """The n-best captions of each feature row; `fluent` applies fluency_rules (False: the model's own).
    An attention decoder's captions carry the weights the search chose each word with: no second pass."""
    traced = looks_at_regions(steps)
    results = beam_search(steps.attended_step if traced else steps.step, steps.initial_state(features),
                          len(features), vocab.start_id, vocab.end_id, beam_size, max_length, n_best,
                          banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id),
                          rules=fluency_rules(vocab) if fluent else None, traced=traced)
    return [[Caption(vocab.decode(h.tokens), h.log_prob, attention_maps(h, vocab.end_id) if traced else None)
             for h in hyps] for hyps in results]


def attention_maps(hypothesis, end_id: int) -> np.ndarray:
    """A traced hypothesis' weights for each word (not its end), as square grids."""
    weights = np.array([w for token, w in zip(hypothesis.tokens, hypothesis.trace) if token != end_id], np.float32)
    side = math.isqrt(weights.shape[1]) if len(weights) else 0
    return weights.reshape(len(weights), side, side)


def preprocess(source, image_size: int) -> np.ndarray | Failure:
    """The encoder's input for one image (a path, bytes, PIL image or array), as Captioner.describe
    computes it (so the captions are the same), or a Failure saying why there is none."""
    try:
        return to_model_input(load_image(source), image_size)
    except ImageError as error:
        return Failure(str(error))
    except OSError as error:  # e.g. a file that cannot be read (permissions)
        return Failure(f"{source} could not be read ({error.strerror or error})")


class Captioner:
    """Image in, English caption out.

    >>> captioner = Captioner.from_pretrained("weights")
    >>> captioner.caption("photo.jpg", beam_size=3)

    One photo: describe (or caption, for the text alone). Many: preprocess each (pixels, or a
    Failure saying why there are none), then describe_batch; encode_batch and describe_features
    are its two halves, for callers that encode one batch while another is searched.
    """

    def __init__(self, steps: Steps, vocab: Vocabulary, config: dict, image_encoder: PixelEncoder,
                 familiarity: Familiarity | None = None):
        self.steps, self.vocab, self.config, self.image_encoder = steps, vocab, config, image_encoder
        self.familiarity = familiarity
        self.max_length = config["max_length"]
        self.image_size = config["encoder"]["image_size"]
        # NumPy's OpenBLAS threads spin a while after each product: beside the encoder's own threads on
        # a small CPU that slowed the next Xception pass by a third (bench.py). The decoder's products
        # are small; one thread is enough. threadpoolctl applies it whatever was imported first.
        threadpoolctl.threadpool_limits(1, user_api="blas")
        if config["encoder"]["weights_fingerprint"] != image_encoder.fingerprint:
            log.warning("the decoder was trained on other backbone weights than %s (fingerprint %s, not %s); "
                        "captions will be poor", image_encoder.source, image_encoder.fingerprint,
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
        return cls(steps, vocab, config, image_encoder, read_familiarity(Path(folder), config))

    @property
    def looks_at_regions(self) -> bool:
        """Whether its captions carry where the decoder looked for each word (Caption.looked)."""
        return looks_at_regions(self.steps)

    def warm_up(self) -> None:
        """Caption a blank photo once: runtimes set up their kernels on the first pass (OpenVINO's
        bf16 encoder took 0.13 s, then 0.07 s), which would otherwise slow the first request."""
        self.describe(np.zeros((self.image_size, self.image_size, 3), np.uint8))

    def describe(self, image, beam_size: int = DEFAULT_BEAM_SIZE) -> Description:
        """The caption, the `beam_size` best captions and the photo's familiarity. `image`: a path,
        PIL image, bytes or HxWx3 array; one that is not an image raises ImageError."""
        return self.describe_features(self.image_encoder.encode([image], 1), beam_size)[0]

    def caption(self, image, beam_size: int = DEFAULT_BEAM_SIZE) -> str:
        """The best caption of `image` (as for describe; the search stops once it is found)."""
        return self.describe_features(self.image_encoder.encode([image], 1), beam_size, 1)[0].caption

    def preprocess(self, source) -> np.ndarray | Failure:
        """The encoder's input for one image, or a Failure saying why there is none (preprocess)."""
        return preprocess(source, self.image_size)

    def encode_batch(self, loaded: list[np.ndarray | Failure]) -> np.ndarray | None:
        """The features of the preprocessed images (Failures skipped), in one encoder pass; None when all failed."""
        pixels = [item for item in loaded if not isinstance(item, Failure)]
        return self.image_encoder.encode_pixels(np.stack(pixels)) if pixels else None

    def describe_features(self, features: np.ndarray, beam_size: int = DEFAULT_BEAM_SIZE,
                          n_best: int | None = None) -> list[Description]:
        """A Description of each feature row, with its `n_best` (default beam_size) best captions:
        one batched beam search."""
        captions = decode(self.steps, self.vocab, features, beam_size, self.max_length, n_best or beam_size)
        if self.familiarity is None:
            return [Description(best[0].text, best, None, False) for best in captions]
        threshold = self.config["familiarity"]["unfamiliar_below"]
        return [Description(best[0].text, best, float(f), bool(f < threshold))
                for best, f in zip(captions, self.familiarity(pooled(features)))]

    def describe_batch(self, loaded: list[np.ndarray | Failure], beam_size: int = DEFAULT_BEAM_SIZE,
                       n_best: int = 1, features: np.ndarray | None = None) -> list[Description | Failure]:
        """The Description of each preprocessed image, or its Failure as given; `features`: their
        encode_batch when it has been computed already."""
        if features is None:
            features = self.encode_batch(loaded)
        described = iter(self.describe_features(features, beam_size, max(n_best, 1)) if features is not None else [])
        return [item if isinstance(item, Failure) else next(described) for item in loaded]

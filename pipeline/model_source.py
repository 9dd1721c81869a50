"""Which model to caption with, and loading it: shared by app.py and caption.py.

A model is named by `--model`: a local model folder or a Hub repo id (with `--revision`). When
it is not given, $CAPTION_MODEL_REPO decides and the local weights/ are the fallback
(pipeline.hub.resolve_weights), as the app and the Hugging Face Space have always done.
"""
import argparse
import os
from pathlib import Path

from .artifact import ARTIFACT_FILES, ArtifactError
from .captioner import ENCODER_CHOICES, BackboneError, Captioner
from .encoder import BACKBONE_WEIGHTS_ENV
from .hub import (HOW_TO_GET_WEIGHTS, LOCAL_WEIGHTS, REPO_ENV, REVISION_ENV, NoWeightsError, fetch_from_hub,
                  has_artifact, resolve_weights)

ENCODER_ENV = "CAPTION_ENCODER"


class ModelError(RuntimeError):
    """No usable model: the message says what to do."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --revision and --encoder, the same in every entry point."""
    parser.add_argument("--model", help=f"a local model folder or a Hugging Face Hub repo id (default: "
                        f"${REPO_ENV}, pinned by ${REVISION_ENV}, falling back to the local weights/ when it "
                        "is unset, or unpinned and unreachable)")
    parser.add_argument("--revision", help="with a Hub repo: the branch, tag or commit (default: main)")
    parser.add_argument("--encoder", choices=ENCODER_CHOICES, default=os.environ.get(ENCODER_ENV, "auto"),
                        help=f"image encoder (default ${ENCODER_ENV}, else auto: the folder's exported encoder "
                             "when it has one; keras needs TensorFlow)")


def resolve_model(model: str | Path | None = None, revision: str | None = None,
                  fallback: str | Path = LOCAL_WEIGHTS) -> Path:
    """The model folder that `model` names.

    None: $CAPTION_MODEL_REPO, else `fallback` (pipeline.hub.resolve_weights). An existing folder:
    itself. Anything else is a Hub repo id, fetched at `revision` (default main); named
    explicitly, it never falls back to other weights.
    """
    try:
        if model is None:
            return resolve_weights(fallback)
    except NoWeightsError as error:
        raise ModelError(str(error)) from None
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not has_artifact(folder):
            raise ModelError(f"{folder} is not a model folder: it needs {', '.join(ARTIFACT_FILES)}. "
                             f"To get one, {HOW_TO_GET_WEIGHTS}.")
        return folder
    if Path(model).is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1:
        raise ModelError(f"model folder not found: {model} (and it is not a Hub repo id, OWNER/NAME)")
    folder, problem = fetch_from_hub(str(model), revision or "main")
    if problem:
        raise ModelError(f"the Hub model {model}@{revision or 'main'} cannot be used: {problem}")
    return folder


def load_captioner(folder: Path, encoder: str = "auto") -> Captioner:
    """The model folder loaded with the image encoder that `encoder` names (ENCODER_CHOICES)."""
    try:
        return Captioner.from_pretrained(folder, encoder=encoder)
    except ArtifactError as error:
        raise ModelError(f"{error}\nTo get usable weights, {HOW_TO_GET_WEIGHTS}.") from None
    except ImportError as error:  # the Keras encoder, where only requirements.txt is installed
        raise ModelError(f"the Keras encoder needs TensorFlow ({error}): install requirements-train.txt, "
                         f"or export the encoder with `python export_encoder.py --weights {folder}`") from None
    except BackboneError as error:
        raise ModelError(f"could not build the Xception backbone: {error}\nOffline, point "
                         f"{BACKBONE_WEIGHTS_ENV} at a local weights file (README.md, 'Offline backbone "
                         "weights').") from None


def load_model(model: str | Path | None = None, revision: str | None = None, encoder: str = "auto",
               fallback: str | Path = LOCAL_WEIGHTS) -> tuple[Captioner, Path]:
    """The loaded Captioner that `model` and `revision` name (resolve_model), and its folder."""
    folder = resolve_model(model, revision, fallback)
    return load_captioner(folder, encoder), folder

"""Which model to caption with, and loading it: a local model folder, or a Hub repo at a revision.

A model is named by `--model`: a local model folder or a Hub repo id (with `--revision`). When
it is not given, $CAPTION_MODEL_REPO decides (pinned by $CAPTION_MODEL_REVISION) and the local
weights/ are the fallback, as the app and the Hugging Face Space have always done. A resolved
model is a ModelLocation: its folder and, for a Hub snapshot, the repo and commit it is, which
another machine (a Ray worker) fetches again by name.
"""
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download

from .artifact import ARTIFACT_FILES, SERVED_FILES, WEIGHTS_FILE, ArtifactError, is_model_folder
from .captioner import BackboneError, Captioner
from .encoder import BACKBONE_WEIGHTS_ENV
from .files import sha256_of

log = logging.getLogger(__name__)

REPO_ENV, REVISION_ENV, ENCODER_ENV = "CAPTION_MODEL_REPO", "CAPTION_MODEL_REVISION", "CAPTION_ENCODER"
LOCAL_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
HOW_TO_GET_WEIGHTS = (f"train a model with `python train.py --data FLICKR8K --out weights/`, or set {REPO_ENV} "
                      "to a Hub repo published with `python -m pipeline.hub push`")


class ModelError(RuntimeError):
    """No usable model: the message says what to do."""


@dataclass(frozen=True)
class ModelLocation:
    """A model folder on this machine, and the Hub repo and commit it is a snapshot of (None: a local folder)."""
    folder: Path
    repo_id: str | None = None
    commit: str | None = None

    def describe(self) -> str:
        """Which model this is, for users: the Hub repo and commit, or the local weights' digest
        (never its path on this machine)."""
        if self.repo_id:
            return f"{self.repo_id} at commit {self.commit}"
        return f"local weights, {WEIGHTS_FILE} SHA-256 {sha256_of(self.folder / WEIGHTS_FILE)[:12]}"


def fetch_from_hub(repo_id: str, revision: str = "main") -> tuple[ModelLocation | None, str | None]:
    """The snapshot of `repo_id` at `revision` (only the files loading needs), else None and why not."""
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=SERVED_FILES))
    except Exception as error:  # network, auth, unknown repo or revision, bad id
        first_line = str(error).partition("\n")[0]
        return None, f"unavailable ({type(error).__name__}: {first_line})"
    if not is_model_folder(folder):
        return None, f"it lacks some of {', '.join(ARTIFACT_FILES)}"
    # huggingface_hub names a snapshot's folder by its commit
    return ModelLocation(folder, repo_id, folder.name), None


def resolve_default(local: str | Path = LOCAL_WEIGHTS) -> ModelLocation:
    """The model to load when none is named: the Hub repo named by $CAPTION_MODEL_REPO, else `local`.

    The Hub copy is pinned by $CAPTION_MODEL_REVISION (default main) and only the files loading
    needs are fetched. When the repo's main cannot be used (offline, unknown repo, no access),
    one line says why and the local folder is used instead. A pinned revision that cannot be
    used is an error: the operator asked for those weights and no others.
    """
    local = Path(local)
    repo_id = os.environ.get(REPO_ENV)
    if repo_id:
        pinned = os.environ.get(REVISION_ENV)
        revision = pinned or "main"
        location, problem = fetch_from_hub(repo_id, revision)
        if problem is None:
            log.info("model weights: Hub repo %s@%s (commit %s)", repo_id, revision, location.commit)
            return location
        if pinned:
            raise ModelError(f"the pinned model {repo_id}@{revision} ({REVISION_ENV}) cannot be used: {problem}. "
                             f"Fix or unset {REVISION_ENV}; a pinned revision never falls back to other weights.")
        log.warning("model weights: Hub repo %s@%s %s; falling back to %s", repo_id, revision, problem, local)
    if is_model_folder(local):
        log.info("model weights: local folder %s", local)
        return ModelLocation(local)
    raise ModelError(f"no usable model weights: {local} does not hold {', '.join(ARTIFACT_FILES)}"
                     f"{f' and the Hub repo {repo_id} could not be used' if repo_id else ''}. "
                     f"To get them, {HOW_TO_GET_WEIGHTS}.")


def resolve_model(model: str | Path | None = None, revision: str | None = None,
                  fallback: str | Path = LOCAL_WEIGHTS) -> ModelLocation:
    """The model that `model` names.

    None: $CAPTION_MODEL_REPO, else `fallback` (resolve_default). An existing folder: itself.
    Anything else is a Hub repo id, fetched at `revision` (default main); named explicitly, it
    never falls back to other weights.
    """
    if model is None:
        return resolve_default(fallback)
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not is_model_folder(folder):
            raise ModelError(f"{folder} is not a model folder: it needs {', '.join(ARTIFACT_FILES)}. "
                             f"To get one, {HOW_TO_GET_WEIGHTS}.")
        return ModelLocation(folder)
    if Path(model).is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1:
        raise ModelError(f"model folder not found: {model} (and it is not a Hub repo id, OWNER/NAME)")
    location, problem = fetch_from_hub(str(model), revision or "main")
    if problem:
        raise ModelError(f"the Hub model {model}@{revision or 'main'} cannot be used: {problem}")
    return location


def load_captioner(folder: Path, encoder: str = "auto", backbone_weights: str | None = None) -> Captioner:
    """The model folder loaded with the image encoder that `encoder` names (captioner.ENCODER_CHOICES)."""
    try:
        return Captioner.from_pretrained(folder, backbone_weights, encoder=encoder)
    except ArtifactError as error:
        raise ModelError(f"{error}\nTo get usable weights, {HOW_TO_GET_WEIGHTS}.") from None
    except ImportError as error:  # the Keras encoder, where only requirements.txt is installed
        raise ModelError(f"the Keras encoder needs TensorFlow ({error}): install requirements-train.txt, "
                         f"or export the encoder with `python export_encoder.py --model {folder}`") from None
    except BackboneError as error:
        raise ModelError(f"could not build the Xception backbone: {error}\nOffline, point "
                         f"{BACKBONE_WEIGHTS_ENV} at a local weights file (README.md, 'Offline backbone "
                         "weights').") from None


def load_model(model: str | Path | None = None, revision: str | None = None, encoder: str = "auto",
               fallback: str | Path = LOCAL_WEIGHTS) -> tuple[Captioner, ModelLocation]:
    """The loaded Captioner that `model` and `revision` name (resolve_model), and where it is."""
    location = resolve_model(model, revision, fallback)
    return load_captioner(location.folder, encoder), location

"""Publishing a model folder to the Hugging Face Hub, with a model card (loading one: pipeline/model_source.py).

  python -m pipeline.hub push weights/ USER/flickr8k-captioner [--private] [--dry-run]

The token comes from $HF_TOKEN or the login cached by `hf auth login`; huggingface_hub reads it
itself, so this module never holds it.
"""
import argparse
import logging
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.constants import is_offline_mode

from .artifact import (ARTIFACT_FILES, CARD_FILE, CONFIG_FILE, EXIT_FLOW_FILE, FAMILIARITY_FILE, METRICS_FILE,
                       REPORT_FILES, SELF_CRITICAL_LOG, SERVED_FILES, TRAINING_LOG, VOCAB_FILE, WEIGHTS_FILE,
                       ArtifactError, check_file_size, folder_file, is_model_folder, model_files, read_config, read_json)
from .captioner import BackboneError, Captioner
from .cli import run_main
from .decoder import DECODERS
from .encoder import BACKBONE_WEIGHTS_ENV, PixelEncoder
from .files import sha256_of
from .model_source import REPO_ENV

log = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).with_name("model_card.md")  # the card's text, with $placeholders

# The scores of evaluate.py's JSON that go on the model card: key -> (model-index metric type, name).
# Its other keys are settings, counts or bootstrap intervals (KEY_ci95_low/high, shown beside them).
CARD_METRICS = {"bleu_1": ("bleu", "BLEU-1"), "bleu_2": ("bleu", "BLEU-2"), "bleu_3": ("bleu", "BLEU-3"),
                "bleu_4": ("bleu", "BLEU-4"), "meteor": ("meteor", "METEOR"), "rouge_l": ("rouge", "ROUGE-L"),
                "cider": ("cider", "CIDEr-D"), "bertscore_f1": ("bertscore", "BERTScore F1"),
                "bertscore_f1_rescaled": ("bertscore", "BERTScore F1, rescaled")}


class HubError(RuntimeError):
    """Publishing cannot start (no token, nothing to publish)."""


def _read_json(path: Path) -> dict | None:
    """A JSON object of the folder (ArtifactError when it is not one), None when there is no such file."""
    return read_json(path) if path.is_file() else None


def _metric_rows(metrics: dict) -> list[tuple[str, str, float, str]]:
    """(metric type, name, value, 95% interval or "") of each score evaluate.py computed."""
    rows = []
    for key, (metric_type, name) in CARD_METRICS.items():
        if metrics.get(key) is None:  # skipped, e.g. METEOR without Java
            continue
        low, high = metrics.get(f"{key}_ci95_low"), metrics.get(f"{key}_ci95_high")
        interval = f"{low:.4f} – {high:.4f}" if low is not None and high is not None else ""
        rows.append((metric_type, name, round(float(metrics[key]), 4), interval))
    return rows


def encoder_description(encoder: dict) -> str:
    """How the model card names the backbone: ImageNet's as it is, or with the exit flow tuned."""
    pooling = "its grid of 10x10 regions" if encoder.get("pooling") == "grid" else "average pooling"
    if "tuned_exit_flow" not in encoder:
        return f"ImageNet weights, {pooling}, not part of this repo"
    return (f"ImageNet weights, its exit flow (blocks 13-14) then trained with the decoder and stored here as "
            f"`{EXIT_FLOW_FILE}`, {pooling}")


def model_card(repo_id: str, config: dict, metrics: dict | None) -> ModelCard:
    """README.md for the model repo: Hub metadata, usage, training, evaluation, limitations."""
    training = config.get("training", {})
    rows = _metric_rows(metrics) if metrics else []
    split = (metrics or {}).get("split", "test")
    data = ModelCardData(
        library_name="keras", pipeline_tag="image-to-text", language="en",
        license="other", license_name="flickr8k-research-use",
        datasets=["flickr8k"], tags=["image-captioning", "flickr8k", "xception", "lstm", "tensorflow", "openvino"],
        model_name=repo_id.split("/")[-1],
        metrics=sorted({metric_type for metric_type, *_ in rows}) or None,
        eval_results=[EvalResult(task_type="image-to-text", task_name="Image captioning", dataset_type="flickr8k",
                                 dataset_name="Flickr8k", dataset_split=split, metric_type=metric_type,
                                 metric_name=name, metric_value=value) for metric_type, name, value, _ in rows] or None,
    )
    if rows:
        bertscore = f"; BERTScore with {metrics['bertscore_model']}" if metrics.get("bertscore_model") else ""
        evaluation = (f"Flickr8k {split} split: {metrics.get('n_images', '?')} images with five reference captions "
                      f"each, beam size {metrics.get('beam_size', '?')}. BLEU, METEOR, ROUGE-L and CIDEr-D come "
                      f"from the COCO caption evaluation code ({metrics.get('tokenizer', '?')} tokenizer){bertscore}."
                      "\n\n| metric | score | 95% bootstrap interval |\n|---|---|---|\n"
                      + "".join(f"| {name} | {value:.4f} | {interval} |\n" for _, name, value, interval in rows))
    else:
        evaluation = f"Not evaluated yet: this upload carried no `{METRICS_FILE}` from `evaluate.py`.\n"
    facts = {"training images": training.get("train_images"), "training captions": training.get("train_captions"),
             "epochs run": training.get("epochs_run"), "best epoch": training.get("best_epoch"),
             "best dev CIDEr-D (beam 3)": training.get("best_dev_cider"), "dev loss": training.get("dev_loss"),
             "decoders averaged (ensemble)": len(training.get("ensemble_of", [])) or None,
             "each decoder's best dev CIDEr-D (beam 3)": ", ".join(
                 str(m.get("self_critical", m).get("best_dev_cider")) for m in training.get("ensemble_of", [])) or None,
             "self-critical stage: epochs run": training.get("self_critical", {}).get("epochs_run"),
             "self-critical stage: best dev CIDEr-D (beam 3)": training.get("self_critical", {}).get("best_dev_cider"),
             "vocabulary (tokens)": config["vocab_size"],
             "longest caption (tokens)": config["max_length"],
             "decoder weights stored as": config.get("weights_dtype"),
             "backbone weights fingerprint": config["encoder"]["weights_fingerprint"],
             "exit flow tuned from the backbone": config["encoder"].get("tuned_exit_flow", {}).get("from_fingerprint"),
             "Keras / TensorFlow": " / ".join(config.get("versions", {}).values()) or None}
    training_lines = "".join(f"- {name}: {value}\n" for name, value in facts.items() if value is not None)
    files = (f"`{CONFIG_FILE}` (architecture, encoder, training settings), `{VOCAB_FILE}`, `{WEIGHTS_FILE}` (the "
             f"decoder's Keras weights), the exported encoder when there is one, `{FAMILIARITY_FILE}` (how close a "
             "photo is to the training photos, calibrated on dev) when there is one"
             + (f", `{METRICS_FILE}` (evaluate.py's scores)" if metrics else "")
             + f" and `{TRAINING_LOG}` (and `{SELF_CRITICAL_LOG}` for the self-critical stage) when the training "
             "run wrote them.")
    body = string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(
        repo_id=repo_id, served_files=SERVED_FILES, backbone_weights_env=BACKBONE_WEIGHTS_ENV, repo_env=REPO_ENV,
        files=files, encoder=encoder_description(config["encoder"]),
        decoder=DECODERS[config["architecture"]["name"]].describe(config["architecture"]),
        training=training_lines, evaluation=evaluation, vocab_size=config["vocab_size"])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _local_paths(value, key: str = "") -> list[str]:
    """The keys of `value` (nested JSON) whose strings are paths of this machine."""
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _local_paths(v, f"{key}.{k}" if key else k)]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _local_paths(v, f"{key}[{i}]")]
    is_path = isinstance(value, str) and (Path(value).is_absolute() or value.startswith("~"))
    return [key] if is_path else []


def check_publishable(folder: Path) -> None:
    """Refuse scores measured on other weights, and local paths, before anything is published."""
    metrics = _read_json(folder / METRICS_FILE)
    if metrics is not None:
        measured, weights = metrics.get("weights_sha256"), sha256_of(folder / WEIGHTS_FILE)
        if measured != weights:
            raise HubError(f"{folder / METRICS_FILE} was not measured on these weights (its weights_sha256 is "
                           f"{measured}, {WEIGHTS_FILE} has {weights}): run evaluate.py --json on this folder "
                           f"again, or remove {METRICS_FILE} to publish without scores")
    for name in (CONFIG_FILE, METRICS_FILE):
        keys = _local_paths(_read_json(folder / name) or {})
        if keys:
            raise HubError(f"{folder / name} holds paths of this machine ({', '.join(keys)}), which would be "
                           "published; replace them with names")


def build_upload_folder(folder: str | Path, dest: str | Path, repo_id: str) -> Path:
    """Copy the artifact (and its metrics and training log, when present) into `dest` with a model card."""
    folder, dest = Path(folder), Path(dest)
    if not is_model_folder(folder):
        raise HubError(f"{folder} is not a model folder: it needs {', '.join(ARTIFACT_FILES)}")
    config = read_config(folder)
    check_publishable(folder)
    if dest.exists() and any(dest.iterdir()):  # stray files would be uploaded too
        raise HubError(f"{dest} is not empty; the upload folder must hold only what is published")
    dest.mkdir(parents=True, exist_ok=True)
    # what config.json names, each inside the folder, and the reports of its making when present
    reports = [folder_file(folder, name) for name in REPORT_FILES]
    for path in [*model_files(folder, config), *(path for path in reports if path.is_file())]:
        check_file_size(path)
        shutil.copy2(path, dest / path.name)
    model_card(repo_id, config, _read_json(dest / METRICS_FILE)).save(dest / CARD_FILE)
    return dest


def check_upload_folder(folder: Path, image_encoder: PixelEncoder | None = None) -> str:
    """Load `folder` as the app would and caption a plain gray image; returns that caption."""
    captioner = Captioner.from_pretrained(folder, image_encoder=image_encoder)
    return captioner.caption(np.full((64, 64, 3), 128, np.uint8))


def stage(folder: str | Path, dest: Path, repo_id: str, image_encoder: PixelEncoder | None = None) -> Path:
    """Build the upload folder and check that it loads, so a broken model is never published."""
    build_upload_folder(folder, dest, repo_id)
    caption = check_upload_folder(dest, image_encoder)
    log.info("%s loads with Captioner.from_pretrained (a gray test image: %r)", dest, caption)
    return dest


def default_commit_message(folder: Path) -> str:
    training = (_read_json(folder / CONFIG_FILE) or {}).get("training", {})
    metrics = _read_json(folder / METRICS_FILE) or {}
    parts = [f"{training['epochs_run']} epochs, best dev CIDEr-D {training['best_dev_cider']}"] if training else []
    if "bleu_4" in metrics:
        parts.append(f"{metrics.get('split', 'test')} BLEU-4 {metrics['bleu_4']:.4f}")
    return "Upload Flickr8k captioner" + (f" ({', '.join(parts)})" if parts else "")


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None, *,
                dry_run: bool = False, dest: str | Path | None = None,
                image_encoder: PixelEncoder | None = None) -> str:
    """Publish a model folder with its model card; returns the commit URL.

    With `dry_run` nothing leaves the machine: the exact upload folder is built and checked in
    `dest` (else a new temporary folder), and its path is returned. A dry run that fails leaves
    nothing staged behind.
    """
    if dry_run:
        staging = Path(dest or tempfile.mkdtemp(prefix="hub-upload-"))
        existed = dest is not None and staging.exists()
        try:
            stage(folder, staging, repo_id, image_encoder)
        except BaseException:
            if existed:  # stage() refuses a folder that is not empty: what is in it now was staged
                for path in staging.iterdir():
                    path.unlink()
            else:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("dry run: %s is what would be uploaded to %s", staging, repo_id)
        return str(staging)
    if is_offline_mode():
        raise HubError("huggingface_hub is in offline mode (HF_HUB_OFFLINE is set), so nothing can be published; "
                       "unset it, or use --dry-run")
    if get_token() is None:
        raise HubError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    with tempfile.TemporaryDirectory(prefix="hub-upload-") as tmp:
        staging = stage(folder, Path(tmp), repo_id, image_encoder)
        api = HfApi()
        api.create_repo(repo_id, private=private or None, exist_ok=True)  # None: the account's default
        if private and not api.repo_info(repo_id).private:  # create_repo leaves an existing repo as it is
            raise HubError(f"{repo_id} already exists and is public, so --private cannot apply; nothing was "
                           "uploaded. Make it private in its settings on the Hub first, or push without --private.")
        # "*": files of an earlier upload that this one lacks (say, metrics of other weights) are
        # deleted, so the repo holds exactly this folder (the Hub keeps .gitattributes)
        commit = api.upload_folder(repo_id=repo_id, folder_path=staging, delete_patterns="*",
                                   commit_message=commit_message or default_commit_message(staging))
    log.info("published %s to %s", folder, commit.commit_url)
    return commit.commit_url


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=f"Publish a trained model folder to the Hugging Face Hub. The load "
                                f"check builds the Xception backbone from ${BACKBONE_WEIGHTS_ENV}, else ImageNet.")
    commands = p.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="upload a model folder and its generated model card")
    push.add_argument("folder", help="the model folder, e.g. weights/")
    push.add_argument("repo_id", help="the Hub model repo, e.g. USER/flickr8k-captioner")
    push.add_argument("--private", action="store_true", help="create the repo private; refused when the repo "
                      "already exists as public")
    push.add_argument("--commit-message", help="default: names the training run and its test BLEU-4")
    push.add_argument("--dry-run", action="store_true", help="build and check the upload folder, upload nothing")
    push.add_argument("--out", help="with --dry-run: build the folder here (default: a new temporary folder)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with run_main(HubError, ArtifactError, BackboneError):
        print(push_to_hub(args.folder, args.repo_id, args.private, args.commit_message, dry_run=args.dry_run,
                          dest=args.out))


if __name__ == "__main__":
    main()

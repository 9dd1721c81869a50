"""pipeline/model_source.py: what --model names, for app.py and caption.py alike."""
import pytest

from pipeline import model_source
from pipeline.model_source import ModelError, ModelLocation, resolve_model


def test_a_model_folder_is_itself(tiny_model, monkeypatch):
    monkeypatch.setenv(model_source.REPO_ENV, "someone/elsewhere")  # --model wins over the environment
    assert resolve_model(tiny_model) == ModelLocation(tiny_model)
    assert resolve_model(str(tiny_model)) == ModelLocation(tiny_model)


def test_a_folder_without_a_model_or_a_missing_path_says_so(tmp_path):
    with pytest.raises(ModelError, match="is not a model folder: it needs config.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelError, match="model folder not found: .*nowhere/model .*not a Hub repo id"):
        resolve_model(tmp_path / "nowhere" / "model")


def test_a_hub_repo_is_fetched_at_its_revision_and_never_falls_back(tiny_model, monkeypatch):
    asked = []

    def fetch(repo_id, revision):
        asked.append((repo_id, revision))
        return (ModelLocation(tiny_model, repo_id, "c0ffee"), None) if revision == "v1" else (None, "unavailable (offline)")

    monkeypatch.setattr(model_source, "fetch_from_hub", fetch)
    assert resolve_model("someone/captioner", "v1") == ModelLocation(tiny_model, "someone/captioner", "c0ffee")
    with pytest.raises(ModelError, match=r"the Hub model someone/captioner@main cannot be used: unavailable"):
        resolve_model("someone/captioner", fallback=tiny_model)
    assert asked == [("someone/captioner", "v1"), ("someone/captioner", "main")]


def test_no_model_named_uses_the_apps_resolution(tiny_model, monkeypatch):
    monkeypatch.delenv(model_source.REPO_ENV, raising=False)
    assert resolve_model(None, fallback=tiny_model) == ModelLocation(tiny_model)

"""recipe.py: the whole training recipe behind weights/ on a small slice of the real Flickr8k."""
import json
import subprocess
import sys

from pipeline import Captioner
from pipeline.artifact import EXIT_FLOW_FILE
from conftest import ROOT, SHARED_FLICKR8K, needs_shared


@needs_shared
def test_the_recipe_makes_an_ensemble_and_a_rerun_skips_the_finished_stages(tmp_path):
    out = tmp_path / "recipe"
    command = [sys.executable, str(ROOT / "recipe.py"), "--data", str(SHARED_FLICKR8K), "--out", str(out),
               "--seeds", "2", "--scst-epochs", "1", "--backbone-weights", "none", "--limit-images", "12",
               "--epochs", "2", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    for seed in (0, 1):
        training = json.loads((out / f"scst_seed{seed}" / "config.json").read_text())["training"]
        # seed 0 learned through the exit flow, in Keras; then every stage from the tuned encoder's export
        assert training["seed"] == seed and training["features"].startswith("keras" if seed == 0 else "openvino")
        assert training.get("encoder_from") == (None if seed == 0 else "xe_seed0")
        assert training["self_critical"]["from"] == f"xe_seed{seed}" and training["self_critical"]["epochs_run"] == 1
        assert training["self_critical"]["features"].startswith("openvino")
    # seed 0 tuned the exit flow; seed 1 learned from that encoder, so the members share it
    tuned = json.loads((out / "xe_seed0" / "config.json").read_text())["encoder"]
    assert "tuned_exit_flow" in tuned
    config = json.loads((out / "ensemble" / "config.json").read_text())
    assert config["architecture"]["name"] == "ensemble" and len(config["architecture"]["members"]) == 2
    for stage in ("xe_seed1", "scst_seed1", "ensemble"):
        encoder = json.loads((out / stage / "config.json").read_text())["encoder"]
        assert {key: encoder[key] for key in ("weights_fingerprint", "tuned_exit_flow", "exported")} == {
            key: tuned[key] for key in ("weights_fingerprint", "tuned_exit_flow", "exported")}
        assert (out / stage / EXIT_FLOW_FILE).read_bytes() == (out / "xe_seed0" / EXIT_FLOW_FILE).read_bytes()
    assert [member["folder"] for member in config["training"]["ensemble_of"]] == ["scst_seed0", "scst_seed1"]
    image = SHARED_FLICKR8K / "Flicker8k_Dataset" / "1000268201_693b08cb0e.jpg"
    assert Captioner.from_pretrained(out / "ensemble").caption(image).split()

    stages = sorted(out.glob("*_seed*/decoder.weights.h5"))
    written = {path: path.stat().st_mtime_ns for path in stages}
    rerun = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("is finished, skipping") == 4
    assert {path: path.stat().st_mtime_ns for path in stages} == written

"""train.py end to end on a slice of the real Flickr8k, with a random backbone."""
import json
import signal
import subprocess
import sys
import time

import numpy as np

from pipeline import Captioner
from conftest import ROOT, SHARED_FLICKR8K, needs_shared


@needs_shared
def test_train_script_on_a_small_slice(tmp_path):
    out = tmp_path / "model"
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(SHARED_FLICKR8K), "--out", str(out),
               "--backbone-weights", "none", "--limit-images", "40", "--epochs", "2", "--min-count", "2",
               "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"config.json", "vocab.json", "decoder.weights.h5", "training_log.csv"} <= {p.name for p in out.iterdir()}
    assert not (out / ".checkpoints").exists()
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["train_images"] == 40 and training["dev_images"] == 10 and training["epochs_run"] == 2
    log_lines = (out / "training_log.csv").read_text().splitlines()
    assert log_lines[0].split(",")[:1] == ["epoch"] and len(log_lines) == 3 and "val_loss" in log_lines[0]

    # the features of those 50 images are cached: a second run only trains
    cached = list((tmp_path / "cache" / "features").glob("*/part-*.npz"))
    rerun = subprocess.run(command + ["--epochs", "1"], capture_output=True, text=True, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert list((tmp_path / "cache" / "features").glob("*/part-*.npz")) == cached
    assert "extracting features" not in rerun.stderr

    captioner = Captioner.from_pretrained(out, backbone_weights="none")
    image = SHARED_FLICKR8K / "Flicker8k_Dataset" / "1000268201_693b08cb0e.jpg"
    assert isinstance(captioner.caption(image), str)
    assert np.isfinite(captioner.generate([image], beam_size=2, n_best=2)[0][0].log_prob)


@needs_shared
def test_killed_training_resumes(tmp_path):
    """SIGKILL training after its first epoch; the next run continues where it stopped."""
    out = tmp_path / "model"
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(SHARED_FLICKR8K), "--out", str(out),
               "--backbone-weights", "none", "--limit-images", "20", "--min-count", "2", "--epochs", "40",
               "--patience", "40", "--cache-dir", str(tmp_path / "cache")]
    log_file = out / "training_log.csv"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        while process.poll() is None and len(log_file.read_text().splitlines() if log_file.exists() else []) < 2:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    epochs_before = len(log_file.read_text().splitlines()) - 1
    assert 1 <= epochs_before < 40, "training finished before it could be killed"
    resumed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    epochs = [int(line.split(",")[0]) for line in log_file.read_text().splitlines()[1:]]
    assert epochs == list(range(40))

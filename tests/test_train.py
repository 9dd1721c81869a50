"""train.py end to end on a slice of the real Flickr8k, with a random backbone; resuming, on a toy model."""
import csv
import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import train
from pipeline import Captioner
from pipeline.formats.base import DatasetError
from pipeline.training import ResumableTraining
from conftest import ROOT, SHARED_FLICKR8K, needs_shared, only_requirements


@needs_shared
def test_train_script_on_a_small_slice(tmp_path):
    out = tmp_path / "model"
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(SHARED_FLICKR8K), "--out", str(out),
               "--backbone-weights", "none", "--limit-images", "40", "--epochs", "2", "--min-count", "2",
               "--cache-dir", str(tmp_path / "cache")]
    # with what requirements-train.txt installs and nothing else
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=only_requirements("requirements-train.txt"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"config.json", "vocab.json", "decoder.weights.h5", "training_log.csv", "encoder.xml", "familiarity.npz"} <= {
        p.name for p in out.iterdir()}
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
    assert captioner.caption(image).split()  # a caption has words
    assert np.isfinite(captioner.describe(image, beam_size=2).n_best[0].log_prob)


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


class DevScores(keras.callbacks.Callback):
    """Stands in for DevCider: the dev score of each epoch, given in advance."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def on_epoch_end(self, epoch, logs=None):
        logs["val_cider"] = self.scores[epoch]


def toy_run(folder, scores, epochs, patience=3, kill=None):
    """A tiny model trained with ResumableTraining in `folder`, resuming what is there; returns
    (model, checkpoint). `kill(model, checkpoint)` runs first, to stop the run somewhere."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    checkpoint = ResumableTraining(folder / ".checkpoints", folder / "training_log.csv", "val_cider", patience)
    initial_epoch = checkpoint.restore(model)
    if kill:
        kill(model, checkpoint)
    x = np.random.default_rng(0).normal(size=(32, 3))
    callbacks = [DevScores(scores), keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                                                       min_delta=10), checkpoint]
    if not checkpoint.out_of_patience():
        model.fit(x, x.sum(1), epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)
    return model, checkpoint


def logged_epochs(folder):
    with open(folder / "training_log.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_a_kill_while_a_checkpoint_is_written_does_not_block_resuming(tmp_path, monkeypatch):
    scores = [0.1, 0.2, 0.3, 0.4]
    before, _ = toy_run(tmp_path, scores, epochs=2)
    weights = [w.copy() for w in before.get_weights()]
    learning_rate = float(before.optimizer.learning_rate)

    def killed_mid_write(model, checkpoint):
        def half_a_file(path, *args, **kwargs):
            open(path, "wb").write(b"\x89HDF\r\n\x1a\n half of a weights file")
            raise KeyboardInterrupt("killed while writing the checkpoint")
        monkeypatch.setattr(model, "save_weights", half_a_file)

    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path, scores, epochs=3, kill=killed_mid_write)
    monkeypatch.undo()
    resumed = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    resumed.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    checkpoint = ResumableTraining(tmp_path / ".checkpoints", tmp_path / "training_log.csv", "val_cider", 3)
    assert checkpoint.restore(resumed) == 2  # the two committed epochs
    for loaded, saved in zip(resumed.get_weights(), weights):
        np.testing.assert_array_equal(loaded, saved)
    assert float(resumed.optimizer.learning_rate) == learning_rate < 0.01  # ReduceLROnPlateau's cuts kept
    _, finished = toy_run(tmp_path, scores, epochs=4)
    assert logged_epochs(tmp_path) == [0, 1, 2, 3] and len(finished.history) == 4


def test_the_log_row_of_a_committed_epoch_is_never_lost(tmp_path, monkeypatch):
    scores = [0.1, 0.2, 0.3, 0.4]

    def killed_after_the_commit(model, checkpoint):
        write_log = checkpoint.write_log

        def killed_the_second_time():
            if len(checkpoint.history) == 2:
                raise KeyboardInterrupt("killed between the checkpoint and the log")
            write_log()
        monkeypatch.setattr(checkpoint, "write_log", killed_the_second_time)

    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path, scores, epochs=4, kill=killed_after_the_commit)
    assert logged_epochs(tmp_path) == [0]
    toy_run(tmp_path, scores, epochs=2)  # nothing left to train: the log is mended all the same
    assert logged_epochs(tmp_path) == [0, 1]
    toy_run(tmp_path, scores, epochs=4)
    assert logged_epochs(tmp_path) == [0, 1, 2, 3]


def test_early_stopping_counts_the_epochs_before_the_interruption(tmp_path):
    scores = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01]  # the best is the first epoch
    toy_run(tmp_path, scores, epochs=3)  # stopped (as if killed) after two epochs without improvement
    _, checkpoint = toy_run(tmp_path, scores, epochs=7)
    assert logged_epochs(tmp_path) == [0, 1, 2, 3]  # one more epoch without improvement, then patience (3) runs out
    assert checkpoint.best_weights == "epoch-0.weights.h5"


def test_bad_data_is_refused_before_the_previous_log_is_touched(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "training_log.csv").write_text("epoch,loss\n0,4.1\n")
    with pytest.raises(DatasetError):
        train.main(["--data", str(tmp_path / "no-such-dataset"), "--out", str(out), "--fresh"])
    assert (out / "training_log.csv").read_text() == "epoch,loss\n0,4.1\n"


def cached_parts(cache) -> list[list[str]]:
    """The keys of each part of every feature cache folder under `cache`."""
    parts = []
    for part in sorted(cache.glob("features/*/part-*.npz")):
        with np.load(part) as data:
            parts.append(data["keys"].tolist())
    return parts


@needs_shared
@pytest.mark.slow
def test_the_feature_pass_on_a_two_node_ray_cluster_resumes_and_matches_the_local_pass(ray_cluster, random_encoder,
                                                                                      tmp_path):
    """train.py --engine ray on 160 Flickr8k images (128 train, 32 dev), on a real two-node cluster joined
    through RAY_ADDRESS: killed (-9) once it has committed some features, run again, then trained on."""
    from pipeline.feature_cache import content_key, extract_features
    from pipeline.formats import load_dataset

    cache, out = tmp_path / "cache", tmp_path / "model"
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(SHARED_FLICKR8K), "--out", str(out),
               "--backbone-weights", "none", "--limit-images", "128", "--epochs", "1", "--min-count", "2",
               "--cache-dir", str(cache), "--engine", "ray", "--no-export"]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=ROOT, env=ray_cluster, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while first.poll() is None and not cached_parts(cache) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    committed = sum(map(len, cached_parts(cache)))
    assert 0 < committed < 160
    rerun = subprocess.run(command, cwd=ROOT, env=ray_cluster, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"({committed} already cached), engine ray" in rerun.stderr and "img/s" in rerun.stderr
    assert json.loads((out / "config.json").read_text())["training"]["epochs_run"] == 1  # the training that follows

    dataset = load_dataset(SHARED_FLICKR8K)
    names = dataset.split("train")[:128] + dataset.split("dev")[:32]
    keys = [key for part in cached_parts(cache) for key in part]
    assert len(keys) == len(set(keys)) == len({content_key(dataset.image_path(n)) for n in names})  # each once
    on_ray = extract_features(random_encoder, dataset.image_dir, names, cache)  # all cached: nothing encoded here
    local = extract_features(random_encoder, dataset.image_dir, names, tmp_path / "local-cache")
    largest = float(np.abs(on_ray - local).max())
    print(f"\nray vs local features of {len(names)} images: largest difference {largest:.3g}, "
          f"{np.mean(np.all(on_ray == local, axis=1)):.1%} identical")
    assert largest < 1e-4

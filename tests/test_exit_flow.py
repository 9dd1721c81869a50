"""train.py --tune-exit-flow: the exit flow trained with the decoder, kept in the model folder, and
served by both encoders; its batches, its cached inputs and its resuming, on toy models."""
import csv
import json
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from pipeline import Captioner
from pipeline.artifact import EXIT_FLOW_FILE, ArtifactError, copy_companion_files, make_config, read_config
from pipeline.decoder import ARCHITECTURE, build_merge_lstm
from pipeline.encoder import EXIT_FLOW_FIRST, EXIT_FLOW_LAST, FEATURE_DIM, KerasEncoder, exit_flow
from pipeline.encoder_runtimes import encoder_from_spec
from pipeline.exit_flow import INPUTS_FOLDER, ExitFlowAndDecoder, exit_flow_inputs, fit, inputs_key, photo_batches
from pipeline.training import DEV_CIDER, ResumableTraining
from conftest import ROOT, SHARED_FLICKR8K, needs_shared, write_image


@needs_shared
def test_a_tuned_exit_flow_is_kept_in_the_folder_and_served_by_both_encoders(tmp_path, random_encoder):
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--data", str(SHARED_FLICKR8K), "--out", str(out), "--tune-exit-flow",
         "--backbone-weights", "none", "--limit-images", "24", "--epochs", "2", "--halve-after", "1",
         "--batch-images", "8", "--min-count", "2", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    config = read_config(out)
    # the decoder reads the tuned backbone, which the folder names apart from the one it started from
    assert config["encoder"]["tuned_exit_flow"]["from_fingerprint"] == random_encoder.fingerprint
    assert config["encoder"]["weights_fingerprint"] != random_encoder.fingerprint
    with h5py.File(out / EXIT_FLOW_FILE) as f:
        stored = [f[name].dtype for name in _datasets(f)]
    assert stored and {str(dtype) for dtype in stored} == {"float16"}
    with open(out / "training_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["exit_flow_lr"]) for r in rows] == pytest.approx([1e-4, 5e-5])  # halved after the first epoch
    assert all(r[DEV_CIDER] and r["val_loss"] for r in rows)

    keras_served = Captioner.from_pretrained(out, backbone_weights="none", encoder="keras")
    exported = Captioner.from_pretrained(out, backbone_weights="none", encoder="exported")
    assert keras_served.image_encoder.fingerprint == config["encoder"]["weights_fingerprint"]
    assert keras_served.image_encoder.cache_key() != random_encoder.cache_key()  # caches keyed by its weights
    images = [SHARED_FLICKR8K / "Flicker8k_Dataset" / n for n in ("1000268201_693b08cb0e.jpg", "101654506_8eb26cfb60.jpg")]
    tuned, served, untuned = (e.encode(images) for e in (keras_served.image_encoder, exported.image_encoder,
                                                         random_encoder))
    np.testing.assert_allclose(served, tuned, atol=2e-2 * np.abs(tuned).max())  # float16 export of the same weights
    assert np.abs(tuned - untuned).max() > 10 * np.abs(tuned - served).max()
    assert exported.caption(images[0]).split()

    # a second stage (scst.py, ensemble.py) copies the tuned exit flow with the exported encoder
    copy_companion_files(out, tmp_path / "next", config)
    assert (tmp_path / "next" / EXIT_FLOW_FILE).read_bytes() == (out / EXIT_FLOW_FILE).read_bytes()


def _datasets(group) -> list[str]:
    names = []
    group.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


def test_a_folder_that_names_a_tuned_exit_flow_must_hold_it(tiny_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in tiny_model.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["tuned_exit_flow"] = {}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="tuned_exit_flow.from_fingerprint"):
        read_config(folder)
    config["encoder"]["tuned_exit_flow"] = {"from_fingerprint": "0123"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=f"{EXIT_FLOW_FILE} is missing"):
        Captioner.from_pretrained(folder, backbone_weights="none", encoder="keras")


def test_the_keras_encoder_takes_the_tuned_exit_flow_and_its_spec_carries_it(random_encoder, tmp_path):
    tuned_flow = exit_flow(KerasEncoder("none").model)
    for variable in tuned_flow.trainable_variables:
        variable.assign(variable * 0.5)
    tuned_flow.save_weights(tmp_path / "exit_flow.weights.h5")
    tuned = KerasEncoder("none", exit_flow_weights=tmp_path / "exit_flow.weights.h5")
    assert tuned.fingerprint != random_encoder.fingerprint
    rebuilt = encoder_from_spec(tuned.spec())  # as a Ray actor builds it
    assert rebuilt.fingerprint == tuned.fingerprint
    pixels = np.random.default_rng(0).integers(0, 255, (1, 299, 299, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rebuilt.encode_pixels(pixels), tuned.encode_pixels(pixels))


def test_each_batch_holds_its_photos_once_with_all_their_captions():
    captions_of = [np.arange(5 * i, 5 * i + 5) for i in range(10)]
    captions_of[3] = np.array([15, 16])  # a photo with fewer captions
    batches = list(photo_batches(captions_of, 4, seed=1))
    assert [len(photos) for photos, _, _ in batches] == [4, 4, 2]
    assert sorted(np.concatenate([photos for photos, _, _ in batches])) == list(range(10))
    for photos, rows, captions in batches:
        assert list(photos) == sorted(photos)
        np.testing.assert_array_equal(captions, np.concatenate([captions_of[p] for p in photos]))
        np.testing.assert_array_equal(photos[rows], [p for p in photos for _ in captions_of[p]])
    assert [list(p) for p, _, _ in batches] != [list(p) for p, _, _ in photo_batches(captions_of, 4, seed=2)]


def test_the_cached_inputs_resume_and_follow_the_images_contents(random_encoder, tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", i) for i in range(5)]
    whole = np.array(exit_flow_inputs(random_encoder, paths, tmp_path / "a"))
    assert whole.shape == (5, 19, 19, 728) and whole.dtype == np.float16
    # a pass killed after 2 rows: the rows after them are computed, the first two read as they are
    key = inputs_key(random_encoder.fingerprint, paths)
    folder = tmp_path / "b" / INPUTS_FOLDER
    folder.mkdir(parents=True)
    array = np.lib.format.open_memmap(folder / f"{key}.npy", mode="w+", dtype=np.float16, shape=whole.shape)
    array[:2] = 7.0  # marks the rows a resumed pass must not compute again
    array.flush()
    del array
    (folder / f"{key}.done.json").write_text(json.dumps({"rows": 2}))
    resumed = np.array(exit_flow_inputs(random_encoder, paths, tmp_path / "b"))
    assert (resumed[:2] == 7.0).all()
    np.testing.assert_array_equal(resumed[2:], whole[2:])
    assert inputs_key(random_encoder.fingerprint, paths[::-1]) != key  # the rows follow the images' order
    write_image(paths[0], 99)  # the same name, another picture: computed again
    again = np.array(exit_flow_inputs(random_encoder, paths, tmp_path / "a"))
    assert not np.array_equal(again[0], whole[0]) and np.array_equal(again[1:], whole[1:])


def toy_backbone(seed: int):
    """A stand-in for Xception with an exit flow of one convolution and a batch norm."""
    keras.utils.set_random_seed(seed)
    pixels = keras.Input((3, 3, 4))
    x = keras.layers.Activation("linear", name=EXIT_FLOW_FIRST)(pixels)
    x = keras.layers.Conv2D(FEATURE_DIM, 1, name="toy_conv")(x)
    x = keras.layers.BatchNormalization(name="toy_bn")(x)
    return keras.Model(pixels, keras.layers.Activation("relu", name=EXIT_FLOW_LAST)(x))


def toy_joint(seed: int) -> ExitFlowAndDecoder:
    decoder = build_merge_lstm(make_config(12, 6, "toy", {**ARCHITECTURE, "units": 8, "embedding_dim": 8}))
    return ExitFlowAndDecoder(toy_backbone(seed), decoder, "avg", 1e-2, 1e-3)


class Killed(Exception):
    pass


def test_a_killed_tuning_resumes_with_both_networks_and_both_optimizers(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 3, 3, 4)).astype(np.float16)
    sequences = np.zeros((12, 6), np.int32)
    sequences[:, 0], sequences[:, 1:4], sequences[:, 4] = 1, rng.integers(4, 12, (12, 3)), 2
    captions_of = [np.array([2 * i, 2 * i + 1]) for i in range(6)]
    scores, after_epoch = iter([0.1, 0.3, 0.2]), []

    def score_dev(joint, kill_at=None):
        if len(checkpoint.history) == kill_at:
            raise Killed
        after_epoch.append([w.copy() for w in joint.get_weights()])
        return {"val_loss": 1.0, DEV_CIDER: next(scores)}

    joint = toy_joint(0)
    checkpoint = ResumableTraining(tmp_path / "ck", tmp_path / "log.csv", DEV_CIDER, patience=5)
    with pytest.raises(Killed):
        fit(joint, inputs, captions_of, sequences, 0, lambda j: score_dev(j, kill_at=1), checkpoint, 3, 2, 1, seed=0)

    resumed = toy_joint(1)  # other first weights: all of them must come from the checkpoint
    checkpoint = ResumableTraining(tmp_path / "ck", tmp_path / "log.csv", DEV_CIDER, patience=5)
    assert checkpoint.restore(resumed) == 1
    restored, committed = resumed.get_weights(), after_epoch[0]  # epoch 2's updates were never committed
    assert len(restored) == len(committed) and all(np.array_equal(a, b) for a, b in zip(restored, committed))
    assert not all(np.array_equal(a, b) for a, b in zip(restored, joint.get_weights()))
    assert int(resumed.exit_flow_optimizer.iterations) == int(resumed.decoder_optimizer.iterations) == 3
    assert resumed.learning_rates() == pytest.approx({"lr": 1e-2, "exit_flow_lr": 1e-3})
    frozen_statistics = [w.numpy().copy() for w in resumed.exit_flow.get_layer("toy_bn").non_trainable_weights]
    fit(resumed, inputs, captions_of, sequences, 0, score_dev, checkpoint, 3, 2, 1, seed=0)
    assert [row["epoch"] for row in checkpoint.history] == [0, 1, 2]
    assert [row["exit_flow_lr"] for row in checkpoint.history] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert int(resumed.exit_flow_optimizer.iterations) == 9
    for kept, now in zip(frozen_statistics, resumed.exit_flow.get_layer("toy_bn").non_trainable_weights):
        np.testing.assert_array_equal(now.numpy(), kept)  # batch norm's statistics stay ImageNet's
    checkpoint.load_best(resumed)  # the second epoch's (0.3)
    assert checkpoint.best_weights == "epoch-1.weights.h5"


@pytest.mark.parametrize("options", [["--encoder-from", "weights"], ["--features-from", "exported"],
                                     ["--engine", "ray"]])
def test_tuning_refuses_what_would_not_train_the_exit_flow_here(options, capsys):
    import train

    with pytest.raises(SystemExit):
        train.parse_args(["--data", "d", "--tune-exit-flow", *options])
    assert "--tune-exit-flow" in capsys.readouterr().err

import json
import shutil

import keras
import numpy as np
import pytest

from pipeline import ArtifactError, Captioner
from pipeline.artifact import load_keras_decoder, make_config, read_config, read_keras_weights, save_artifact
from pipeline.captioner import load_artifact
from pipeline.decoder import build_decoder
from pipeline.vocab import Vocabulary
from conftest import assert_same_captions, n_best_of, write_image

WORDS = "a dog cat runs sits on the grass mat red ball".split()


@pytest.fixture
def artifact(tmp_path, random_encoder):
    keras.utils.set_random_seed(3)
    vocab = Vocabulary.build([WORDS], min_count=1)
    model = build_decoder(len(vocab))
    return save_artifact(tmp_path / "model", model, vocab, make_config(len(vocab), 12, random_encoder.fingerprint))


def test_round_trip_gives_identical_captions(artifact, random_encoder, tmp_path):
    images = [write_image(tmp_path / f"{i}.png", i) for i in range(3)]
    first = Captioner.from_pretrained(artifact, image_encoder=random_encoder)
    resaved = save_artifact(tmp_path / "copy", load_keras_decoder(artifact), first.vocab, first.config)
    second = Captioner.from_pretrained(resaved, image_encoder=random_encoder)
    saved, loaded = read_keras_weights(artifact / "decoder.weights.h5"), read_keras_weights(resaved / "decoder.weights.h5")
    assert saved.keys() == loaded.keys() == {"image_projection", "embedding", "lstm", "merge_projection", "word_logits"}
    for name in saved:
        for a, b in zip(saved[name], loaded[name], strict=True):
            np.testing.assert_array_equal(a, b)
    expected = n_best_of(first, images, 3, 3)
    assert_same_captions(n_best_of(second, images, 3, 3), expected)
    assert [first.caption(image) for image in images] == [hyps[0].text for hyps in expected]
    assert first.caption(images[0], beam_size=3) == expected[0][0].text
    for hyps in expected:
        assert all(token not in h.text.split() for h in hyps for token in ("<unk>", "<start>", "<pad>", "<end>"))
        assert len(hyps[0].text.split()) <= 12


def test_config_records_what_inference_needs(artifact):
    config = json.loads((artifact / "config.json").read_text())
    assert config["encoder"]["backbone"] == "xception" and config["encoder"]["image_size"] == 299
    assert config["vocab_size"] == len(WORDS) + 4 and config["max_length"] == 12
    assert {"keras", "tensorflow"} <= set(config["versions"])


@pytest.mark.parametrize("damage, message", [
    (lambda a: (a / "vocab.json").unlink(), "missing vocab.json"),
    (lambda a: (a / "decoder.weights.h5").unlink(), "missing decoder.weights.h5"),
    (lambda a: (a / "config.json").write_text("{not json"), "config.json is corrupt"),
    (lambda a: (a / "config.json").write_text("null"), "config.json is corrupt: expected a JSON object, got NoneType"),
    (lambda a: (a / "decoder.weights.h5").write_bytes(b"garbage"), "is not a Keras weights file"),
    (lambda a: Vocabulary(list(Vocabulary.build([WORDS + ["extra"]], 1).tokens)).save(a / "vocab.json"),
     "different models"),
])
def test_broken_artifacts_fail_clearly(artifact, damage, message):
    damage(artifact)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(artifact)


def test_weights_of_another_shape_are_refused(artifact, tmp_path):
    other_vocab = Vocabulary.build([WORDS + ["extra"]], min_count=1)
    build_decoder(len(other_vocab)).save_weights(artifact / "decoder.weights.h5")
    with pytest.raises(ArtifactError, match="does not fit the decoder .* layer 'embedding'"):
        load_artifact(artifact)


def test_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nothing")


def test_saved_weights_leave_out_the_optimizer(tmp_path, random_encoder):
    vocab = Vocabulary.build([WORDS], min_count=1)
    model = build_decoder(len(vocab))
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # Adam's moments: twice the weights again
    folder = save_artifact(tmp_path / "m", model, vocab, make_config(len(vocab), 12, random_encoder.fingerprint))
    plain = tmp_path / "plain.weights.h5"
    build_decoder(len(vocab)).save_weights(plain)
    assert (folder / "decoder.weights.h5").stat().st_size < 1.2 * plain.stat().st_size


def edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("vocab_size"), "missing the key 'vocab_size'"),
    (lambda c: c["architecture"].pop("units"), "missing the key 'architecture.units'"),
    (lambda c: c["architecture"].pop("dropout"), "missing the key 'architecture.dropout'"),
    (lambda c: c["encoder"].pop("weights_fingerprint"), "missing the key 'encoder.weights_fingerprint'"),
    (lambda c: c.update(max_length=10**9), "max_length=1000000000 is outside 2..200"),
    (lambda c: c["architecture"].update(units=10**7), "architecture.units=10000000 is outside"),
    (lambda c: c.update(vocab_size="15"), "vocab_size must be an integer"),
    (lambda c: c.update(format_version=3), "format_version 3, this code reads 1 and 2"),
    (lambda c: c["architecture"].update(name="transformer"), "architecture 'transformer' is not one"),
    (lambda c: c.update(architecture={"name": "ensemble", "members": []}), "members must list merge-lstm"),
    (lambda c: c.update(familiarity={"unfamiliar_below": 1.5}), "unfamiliar_below=1.5 is outside"),
    (lambda c: c["encoder"].update(exported={"runtime": "openvino"}), "missing the key 'encoder.exported.sha256'"),
])
def test_config_values_are_checked_before_use(artifact, change, message):
    edit_config(artifact, change)
    with pytest.raises(ArtifactError, match=message) as error:
        load_artifact(artifact)
    assert "config.json" in str(error.value)


def test_a_vocab_file_that_is_not_a_vocabulary(artifact):
    (artifact / "vocab.json").write_text(json.dumps({"tokens": ["a", "b"]}))
    with pytest.raises(ArtifactError, match="vocab.json is not a vocabulary"):
        load_artifact(artifact)


def test_unsupported_backbone_is_refused(artifact, random_encoder):
    edit_config(artifact, lambda c: c["encoder"].update(backbone="resnet50"))
    with pytest.raises(ArtifactError, match="backbone 'resnet50' is not supported"):
        Captioner.from_pretrained(artifact, image_encoder=random_encoder)


def test_other_backbone_weights_are_warned_about(artifact, random_encoder, caplog):
    edit_config(artifact, lambda c: c["encoder"].update(weights_fingerprint="0123456789abcdef"))
    Captioner.from_pretrained(artifact, image_encoder=random_encoder)
    assert "trained on other backbone weights" in caplog.text


def test_a_folder_without_exported_encoder_says_how_to_make_one(artifact):
    with pytest.raises(ArtifactError, match="no exported encoder: build one with `python export_encoder.py"):
        Captioner.from_pretrained(artifact, encoder="exported")


def test_a_format_1_folder_loads_as_before(artifact, random_encoder, tmp_path):
    """Folders written before ensembles and familiarity (format_version 1) load and caption the same."""
    images = [write_image(tmp_path / f"{i}.png", i) for i in range(2)]
    expected = n_best_of(Captioner.from_pretrained(artifact, image_encoder=random_encoder), images, 3, 3)
    config = json.loads((artifact / "config.json").read_text())
    assert config["format_version"] == 2
    (artifact / "config.json").write_text(json.dumps({**config, "format_version": 1}))
    old = Captioner.from_pretrained(artifact, image_encoder=random_encoder)
    assert_same_captions(n_best_of(old, images, 3, 3), expected)
    assert old.familiarity is None and old.describe(images[0]).familiarity is None


def test_an_ensemble_folder_captions_as_its_members_average(artifact, random_encoder, tmp_path):
    """ensemble.py joins folders; of two identical members the ensemble is that member, and of two
    different ones it writes what EnsembleSteps over the members' own files writes."""
    import ensemble
    from pipeline.captioner import decode
    from pipeline.decoder import EnsembleSteps

    keras.utils.set_random_seed(4)
    vocab = Vocabulary.build([WORDS], min_count=1)
    other = save_artifact(tmp_path / "other", build_decoder(len(vocab)), vocab,
                          make_config(len(vocab), 12, random_encoder.fingerprint))
    images = [write_image(tmp_path / f"{i}.png", i) for i in range(3)]
    single = Captioner.from_pretrained(artifact, image_encoder=random_encoder)

    ensemble.main([str(artifact), str(artifact), "--out", str(tmp_path / "twins")])
    twins = Captioner.from_pretrained(tmp_path / "twins", image_encoder=random_encoder)
    assert twins.config["architecture"]["name"] == "ensemble"
    assert [[c.text for c in hyps] for hyps in n_best_of(twins, images, 3, 3)] == \
        [[c.text for c in hyps] for hyps in n_best_of(single, images, 3, 3)]

    ensemble.main([str(artifact), str(other), "--out", str(tmp_path / "pair"), "--weights-dtype", "float32"])
    pair = Captioner.from_pretrained(tmp_path / "pair", image_encoder=random_encoder)
    assert pair.config["architecture"]["mean"] == "geometric"  # ensemble.py's default
    members = EnsembleSteps([load_artifact(artifact)[0], load_artifact(other)[0]], "geometric")
    features = random_encoder.encode(images)
    expected = decode(members, vocab, features, 3, 12, n_best=3)
    found = [d.n_best for d in pair.describe_features(features, 3, n_best=3)]
    assert [[c.text for c in hyps] for hyps in found] == [[c.text for c in hyps] for hyps in expected]
    np.testing.assert_allclose([c.log_prob for hyps in found for c in hyps],
                               [c.log_prob for hyps in expected for c in hyps], rtol=1e-4)


def test_float16_weights_take_half_the_file_and_load_as_float32(artifact, random_encoder, tmp_path):
    import h5py

    import ensemble

    ensemble.main([str(artifact), str(artifact), "--out", str(tmp_path / "f32"), "--weights-dtype", "float32"])
    ensemble.main([str(artifact), str(artifact), "--out", str(tmp_path / "f16")])  # the default
    f32, f16 = tmp_path / "f32" / "decoder.weights.h5", tmp_path / "f16" / "decoder.weights.h5"
    assert json.loads((tmp_path / "f16" / "config.json").read_text())["weights_dtype"] == "float16"
    stored = []
    with h5py.File(f16) as f:
        f.visititems(lambda name, item: stored.append(item.dtype) if isinstance(item, h5py.Dataset) else None)
    assert stored and set(stored) == {np.dtype(np.float16)}
    assert f16.stat().st_size < 0.55 * f32.stat().st_size  # not float32 space left behind in the file
    exact, rounded = read_keras_weights(f32), read_keras_weights(f16)
    assert exact.keys() == rounded.keys()
    for name in exact:
        for a, b in zip(exact[name], rounded[name], strict=True):
            assert b.dtype == np.float32
            np.testing.assert_allclose(b, a.astype(np.float16).astype(np.float32))
    keras_weights = load_keras_decoder(tmp_path / "f16").get_weights()
    assert all(w.dtype == np.float32 for w in keras_weights)
    images = [write_image(tmp_path / f"{i}.png", i) for i in range(2)]
    assert n_best_of(Captioner.from_pretrained(tmp_path / "f16", image_encoder=random_encoder), images)


def test_an_ensemble_that_names_no_mean_averages_probabilities_as_before(artifact, random_encoder, tmp_path):
    import ensemble
    from pipeline.decoder import EnsembleSteps

    ensemble.main([str(artifact), str(artifact), "--out", str(tmp_path / "pair"), "--weights-dtype", "float32"])
    config = json.loads((tmp_path / "pair" / "config.json").read_text())
    del config["architecture"]["mean"]
    (tmp_path / "pair" / "config.json").write_text(json.dumps(config))
    steps = load_artifact(tmp_path / "pair")[0]
    assert isinstance(steps, EnsembleSteps) and steps.mean == "arithmetic"
    config["architecture"]["mean"] = "median"
    (tmp_path / "pair" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="architecture.mean 'median'"):
        load_artifact(tmp_path / "pair")


def test_an_unknown_weights_dtype_is_refused(artifact):
    config = json.loads((artifact / "config.json").read_text())
    (artifact / "config.json").write_text(json.dumps({**config, "weights_dtype": "int4"}))
    with pytest.raises(ArtifactError, match="weights_dtype 'int4'"):
        load_artifact(artifact)


def test_members_that_do_not_fit_together_are_refused(artifact, random_encoder, tmp_path):
    import ensemble

    vocab = Vocabulary.build([WORDS + ["kite"]], min_count=1)
    other = save_artifact(tmp_path / "other", build_decoder(len(vocab)), vocab,
                          make_config(len(vocab), 12, random_encoder.fingerprint))
    with pytest.raises(SystemExit, match="vocab_size"):
        ensemble.main([str(artifact), str(other), "--out", str(tmp_path / "pair")])


EXPORTED = {"runtime": "openvino", "sha256": "0" * 64, "precision": "f32"}


@pytest.mark.parametrize("weight_files", [["/etc/passwd"], ["../../../../etc/hostname"], ["sub/encoder-1.bin"],
                                          ["notes.txt"], [".."]])
def test_a_config_cannot_name_a_file_outside_its_folder(artifact, weight_files):
    edit_config(artifact, lambda c: c["encoder"].update(exported={**EXPORTED, "weight_files": weight_files}))
    with pytest.raises(ArtifactError, match="config.json"):
        load_artifact(artifact)


def test_a_file_that_links_outside_its_folder_is_refused(artifact, tmp_path):
    outside = tmp_path / "elsewhere.json"
    (artifact / "vocab.json").rename(outside)
    (artifact / "vocab.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="vocab.json links outside its model folder"):
        load_artifact(artifact)


def test_ensemble_never_copies_a_file_from_outside_its_members(artifact, tmp_path):
    import ensemble

    victim = tmp_path / "victim.txt"
    victim.write_text("not for copying")
    members = [shutil.copytree(artifact, tmp_path / name) for name in ("m1", "m2")]
    edit_config(members[0], lambda c: c["encoder"].update(exported={**EXPORTED, "weight_files": ["../victim.txt"]}))
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(SystemExit, match="plain names inside it"):
        ensemble.main([*map(str, members), "--out", str(out)])
    assert not (tmp_path / "a").exists()


def declared_but_unwritten_weights(path, shape):
    """A Keras-layout weights file whose one dataset declares `shape`: HDF5 stores no values for
    it until written, so the file is small whatever the shape says."""
    import h5py

    with h5py.File(path, "w") as f:
        layer = f.create_group("layers/word_logits/vars")
        layer.attrs["name"] = "word_logits"
        layer.create_dataset("0", shape=shape, dtype="float32")


def test_a_weights_file_declaring_huge_arrays_is_refused_before_it_is_read(artifact):
    declared_but_unwritten_weights(artifact / "decoder.weights.h5", (60000, 60000))
    assert (artifact / "decoder.weights.h5").stat().st_size < 100_000
    with pytest.raises(ArtifactError, match="decoder.weights.h5 declares 3,600,000,000 values, over the"):
        load_artifact(artifact)


def test_a_familiarity_file_that_inflates_past_its_limit_is_refused(artifact, random_encoder):
    from pipeline.artifact import MAX_CENTROIDS

    rows = MAX_CENTROIDS + 1  # zeros: a few KB in the file, over the limit once inflated
    np.savez_compressed(artifact / "familiarity.npz", centroids=np.zeros((rows, 2048), np.float32),
                        dev_distances=np.zeros(10))
    assert (artifact / "familiarity.npz").stat().st_size < 1_000_000
    edit_config(artifact, lambda c: c.update(familiarity={"unfamiliar_below": 0.03}))
    with pytest.raises(ArtifactError, match="familiarity.npz: centroids inflates to"):
        Captioner.from_pretrained(artifact, image_encoder=random_encoder)


def test_a_decoder_too_large_for_memory_is_refused_within_the_per_field_limits(artifact):
    edit_config(artifact, lambda c: (c.update(vocab_size=200_000), c["architecture"].update(units=4096)))
    with pytest.raises(ArtifactError, match=r"config.json: the decoder it describes takes [\d,]+ values \([\d,]+ MB"):
        load_artifact(artifact)


def test_a_vocabulary_file_far_larger_than_its_vocab_size_is_refused_unread(artifact):
    (artifact / "vocab.json").write_text(json.dumps({"tokens": [f"w{i}" for i in range(100_000)]}))
    with pytest.raises(ArtifactError, match=r"vocab.json is [\d,]+ bytes, over the [\d,]+ this file may take"):
        load_artifact(artifact)


@pytest.mark.parametrize("depth", [40, 100_000])
def test_a_deeply_nested_config_is_refused(artifact, depth):
    config = json.loads((artifact / "config.json").read_text())
    (artifact / "config.json").write_text(json.dumps(config)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ArtifactError, match="config.json is corrupt: nested more than 32 deep"):
        load_artifact(artifact)


def test_a_broken_model_file_is_named_as_the_cause_not_the_backbone(artifact, monkeypatch):
    from pipeline.model_source import ModelError, load_captioner

    monkeypatch.setenv("CAPTION_BACKBONE_WEIGHTS", "none")
    declared_but_unwritten_weights(artifact / "decoder.weights.h5", (60000, 60000))
    with pytest.raises(ModelError) as error:
        load_captioner(artifact, encoder="keras")
    assert "decoder.weights.h5 declares" in str(error.value) and "backbone" not in str(error.value)


def test_only_the_backbones_own_failure_is_reported_as_the_backbones(artifact, monkeypatch):
    """Keras' failing download raises a bare Exception, so the backbone is named only for errors
    from building it: a fault elsewhere surfaces as itself."""
    from pipeline import captioner
    from pipeline.model_source import ModelError, load_captioner

    def offline(*args):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")  # as Keras raises it

    monkeypatch.setattr("pipeline.encoder.KerasEncoder", offline)
    with pytest.raises(ModelError, match="could not build the Xception backbone: URL fetch failure"):
        load_captioner(artifact, encoder="keras")
    monkeypatch.setattr(captioner, "decoder_steps", lambda *args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError) as error:
        load_captioner(artifact, encoder="keras")
    assert not isinstance(error.value, ModelError) and str(error.value) == "a bug"


def test_a_file_over_the_size_a_model_folder_may_hold_is_refused_when_saved_and_when_published(
        artifact, monkeypatch, tmp_path):
    from pipeline import artifact as model_folder
    from pipeline import hub

    monkeypatch.setattr(model_folder, "MAX_FILE_BYTES", 1000)  # the decoder's file is about 100 KB
    captioner_files = read_config(artifact), load_keras_decoder(artifact)
    with pytest.raises(ArtifactError, match=r"decoder.weights.h5 is [\d,]+ bytes, over the 1,000 a model folder's"):
        save_artifact(tmp_path / "big", captioner_files[1], Vocabulary.build([WORDS], min_count=1), captioner_files[0])
    assert not (tmp_path / "big" / "decoder.weights.h5").exists()  # nothing half-written is left
    with pytest.raises(ArtifactError, match="over the 1,000"):
        hub.build_upload_folder(artifact, tmp_path / "upload", "someone/captioner")

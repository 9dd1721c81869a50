import json

import keras
import numpy as np
import pytest

from pipeline import ArtifactError, Captioner
from pipeline.captioner import load_artifact, make_config, save_artifact
from pipeline.decoder import build_decoder
from pipeline.vocab import Vocabulary
from conftest import write_image

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
    resaved = save_artifact(tmp_path / "copy", first.model, first.vocab, first.config)
    second = Captioner.from_pretrained(resaved, image_encoder=random_encoder)
    for loaded, saved in zip(second.model.weights, first.model.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
    expected = first.generate(images, beam_size=3, n_best=3)
    assert second.generate(images, beam_size=3, n_best=3) == expected
    assert first.caption_batch(images) == [hyps[0].text for hyps in expected]
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
    (lambda a: (a / "decoder.weights.h5").write_bytes(b"garbage"), "could not be loaded"),
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
    with pytest.raises(ArtifactError, match="could not be loaded"):
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

"""Self-critical training: the reward against pycocoevalcap, sampling, the update's direction, scst.py."""
import json
import subprocess
import sys

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from pipeline.scst import CiderD, END_WORD, leave_one_out_advantages, reward_references, sample_captions
from pipeline.vocab import SPECIALS, Vocabulary
from conftest import ROOT, SHARED_FLICKR8K, needs_shared

REFERENCES = {
    "1.jpg": ["a black dog runs through the grass", "a dog is running on a lawn", "the black dog runs outside",
              "a dog running in a green field", "a small dog runs across the grass"],
    "2.jpg": ["a man rides a bike down a hill", "a cyclist rides down a dirt hill", "a man on a bicycle",
              "a person riding a mountain bike", "a biker goes down the trail"],
    "3.jpg": ["two children play in the water", "kids splash in a pool", "two kids are swimming",
              "children playing in the pool", "two young children in the water"],
}
CAPTIONS = {"1.jpg": "a black dog runs on the grass", "2.jpg": "a man rides a bike", "3.jpg": "a dog in the water"}


def test_the_reward_is_pycocoevalcaps_cider_d():
    """With the references themselves as the corpus, each caption's reward is its CIDEr-D from
    pycocoevalcap, whose document frequencies come from the same references."""
    expected = Cider().compute_score(REFERENCES, {k: [c] for k, c in CAPTIONS.items()})[1]
    reward = CiderD(REFERENCES)
    np.testing.assert_allclose([reward.score(k, CAPTIONS[k]) for k in REFERENCES], expected, rtol=1e-12)
    assert reward.score("1.jpg", "") == 0.0


def test_a_caption_cut_off_mid_phrase_misses_the_ending():
    reward = CiderD(reward_references(REFERENCES))
    assert reward.score("1.jpg", f"a black dog runs through the grass {END_WORD}") > \
        reward.score("1.jpg", "a black dog runs through the grass")


def test_each_sample_is_measured_against_its_siblings():
    rewards = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 3.0])  # two images, three samples each
    np.testing.assert_allclose(leave_one_out_advantages(rewards, 3), [-1.5, 0.0, 1.5, -1.5, -1.5, 3.0])


class CountingSteps:
    """A fake decoder: word 4, 5, 6 ... in turn, the end after `length` words, all but certain."""

    def __init__(self, vocab_size: int, length: int):
        self.vocab_size, self.length = vocab_size, length

    def initial_state(self, features):
        return (np.zeros(len(features), np.int64),)

    def step(self, tokens, state):
        (position,) = state
        log_probs = np.full((len(tokens), self.vocab_size), -30.0)
        log_probs[:, 0:4] = 0.0  # pad, start, end and unk would win but for the bans
        log_probs[np.arange(len(tokens)), np.where(position < self.length, 4 + position, 2)] = 10.0
        return log_probs, (position + 1,)


def test_samples_are_captions_then_the_end_then_padding():
    rng = np.random.default_rng(0)
    captions = sample_captions(CountingSteps(10, 3), np.zeros((2, 1)), 3, max_length=6, start_id=1, end_id=2,
                               banned_ids=(0, 1, 3), rng=rng)
    assert captions.shape == (6, 6)
    assert captions.tolist() == [[4, 5, 6, 2, 0, 0]] * 6
    open_captions = sample_captions(CountingSteps(10, 5), np.zeros((1, 1)), 2, max_length=3, start_id=1, end_id=2,
                                    banned_ids=(0, 1, 3), rng=rng)
    assert open_captions.tolist() == [[4, 5, 6]] * 2  # cut at max_length: no end token


def test_samples_follow_the_decoders_distribution():
    """Two words at 0.8 and 0.2: the draws come out in about that ratio, never an empty caption."""

    class TwoWords:
        def initial_state(self, features):
            return (np.zeros(len(features)),)

        def step(self, tokens, state):
            log_probs = np.full((len(tokens), 6), -np.inf)
            log_probs[:, 4], log_probs[:, 5] = np.log(0.8), np.log(0.2)
            log_probs[tokens != 1] = -np.inf
            log_probs[tokens != 1, 2] = 0.0  # after one word, the end
            return log_probs, state

    captions = sample_captions(TwoWords(), np.zeros((1000, 1)), 2, 4, 1, 2, (0, 1, 3), np.random.default_rng(1))
    assert set(captions[:, 1]) == {2}
    assert 0.77 < np.mean(captions[:, 0] == 4) < 0.83


def test_self_critical_updates_raise_the_reward():
    """A few updates on a toy decoder: the mean reward of its samples goes up, so the gradient's sign
    and the advantages are the right way round (reversed, the reward falls)."""
    import keras

    from pipeline.decoder import DecoderSteps, build_decoder, layer_weights
    from pipeline.scst import SelfCriticalStep

    keras.utils.set_random_seed(0)
    vocab = Vocabulary(list(SPECIALS) + "a dog runs man rides bike children water play".split())
    references = {"dog": ["a dog runs"] * 5, "bike": ["a man rides a bike"] * 5}
    reward = CiderD(reward_references(references))
    model = build_decoder(len(vocab), units=16, embedding_dim=8, dropout=0.0, feature_dim=4)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    config = {"vocab_size": len(vocab), "encoder": {"feature_dim": 4},
              "architecture": {"units": 16, "embedding_dim": 8}}
    features = np.eye(4, dtype=np.float32)[:2]
    keys, samples, rng, update = ["dog", "bike"], 8, np.random.default_rng(0), SelfCriticalStep(model)

    def sample_and_score():
        steps = DecoderSteps(layer_weights(model), config)
        captions = sample_captions(steps, features, samples, 8, vocab.start_id, vocab.end_id,
                                   (vocab.pad_id, vocab.start_id, vocab.unk_id), rng)
        scores = np.array([reward.score(keys[row // samples],
                                        vocab.decode(ids) + (f" {END_WORD}" if vocab.end_id in ids else ""))
                           for row, ids in enumerate(captions.tolist())])
        return captions, scores

    first = np.mean([sample_and_score()[1].mean() for _ in range(5)])
    for _ in range(60):
        captions, scores = sample_and_score()
        words = np.concatenate([np.full((len(captions), 1), vocab.start_id), captions[:, :-1]], axis=1)
        update(np.repeat(features, samples, axis=0), words, captions,
               leave_one_out_advantages(scores, samples).astype(np.float32))
    last = np.mean([sample_and_score()[1].mean() for _ in range(5)])
    assert last > first + 1.0, (first, last)


def test_an_ensemble_is_fine_tuned_as_a_whole():
    """scst.py on an ensemble folder updates every member through the Keras ensemble, whose log of
    the mean probability must stay float32 like a member's logits."""
    import keras

    from pipeline.decoder import build_ensemble, member_prefix
    from pipeline.scst import SelfCriticalStep

    keras.utils.set_random_seed(0)
    member = {"name": "merge-lstm", "units": 8, "embedding_dim": 8, "dropout": 0.0}
    model = build_ensemble(12, [member, member], feature_dim=4)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    captions = np.array([[5, 6, 3, 0], [7, 3, 0, 0]])
    words = np.concatenate([np.full((2, 1), 2), captions[:, :-1]], axis=1)
    loss = SelfCriticalStep(model)(np.eye(4, dtype=np.float32)[:2], words, captions, np.array([1.0, -1.0], np.float32))
    assert model.output.dtype == "float32" and np.isfinite(float(loss))
    for i in range(2):
        layer = model.get_layer(member_prefix(i) + "word_logits")
        assert not np.array_equal(layer.get_weights()[0], before[layer.name][0])


@needs_shared
def test_scst_script_fine_tunes_a_model_folder(tmp_path, exported_model):
    """End to end on 12 photos. With a learning rate of 0 no epoch can beat the starting model, so
    the folder written keeps its weights (the kept model is never worse on dev than the start)."""
    out = tmp_path / "scst"
    command = [sys.executable, str(ROOT / "scst.py"), "--model", str(exported_model), "--data", str(SHARED_FLICKR8K),
               "--out", str(out), "--limit-images", "12", "--epochs", "2", "--batch-size", "4",
               "--learning-rate", "0", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    self_critical = config["training"]["self_critical"]
    assert self_critical["epochs_run"] == 2 and self_critical["train_images"] == 12
    assert self_critical["features"].startswith("openvino")
    assert self_critical["kept"] == "starting weights"
    assert self_critical["best_dev_cider"] == self_critical["dev_cider_before"]
    from pipeline.artifact import read_keras_weights
    kept, start = read_keras_weights(out / "decoder.weights.h5"), read_keras_weights(exported_model / "decoder.weights.h5")
    assert all(np.array_equal(a, b) for name in start for a, b in zip(kept[name], start[name], strict=True))
    assert not (out / ".checkpoints-scst").exists() and (out / "self_critical_log.csv").is_file()

    from pipeline import Captioner
    captioner = Captioner.from_pretrained(out)  # the exported encoder came along: no TensorFlow needed
    assert captioner.image_encoder.name.startswith("openvino")
    assert captioner.caption(SHARED_FLICKR8K / "Flicker8k_Dataset" / "1000268201_693b08cb0e.jpg").split()


def test_scst_refuses_to_overwrite_its_source(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scst.py"), "--model", str(tmp_path), "--out", str(tmp_path),
                           "--data", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "another folder" in done.stderr


@pytest.mark.parametrize("samples", ["1", "0"])
def test_scst_needs_two_samples_for_a_baseline(tmp_path, samples):
    done = subprocess.run([sys.executable, str(ROOT / "scst.py"), "--data", str(tmp_path), "--samples", samples],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "at least 2" in done.stderr

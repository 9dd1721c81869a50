"""The merge decoder learns a tiny synthetic dataset; its step functions agree with the full model."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from pipeline.beam_search import beam_search
from pipeline.decoder import DecoderSteps, build_decoder, layer_weights
from pipeline.training import caption_sequences, make_dataset, masked_loss
from pipeline.vocab import Vocabulary

CAPTIONS = ["a dog runs through the grass", "two children play on the beach", "a man rides a red bike"]


@pytest.fixture(scope="module")
def overfit():
    keras.utils.set_random_seed(1)
    vocab = Vocabulary.build([c.split() for c in CAPTIONS], min_count=1)
    features = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    sequences = np.zeros((3, 8), np.int32)
    for row, caption in zip(sequences, CAPTIONS):
        ids = vocab.encode(caption.split())
        row[:len(ids)] = ids
    model = build_decoder(len(vocab), units=32, embedding_dim=16, dropout=0.0, feature_dim=16)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=masked_loss)
    ds = make_dataset(features, np.arange(3, dtype=np.int32), sequences, batch_size=3, shuffle=True)
    history = model.fit(ds, epochs=150, verbose=0)
    return model, vocab, features, history.history["loss"]


def numpy_steps(model, vocab) -> DecoderSteps:
    config = {"vocab_size": len(vocab), "architecture": {"units": 32, "embedding_dim": 16},
              "encoder": {"feature_dim": 16}}
    return DecoderSteps(layer_weights(model), config)


def test_tiny_decoder_overfits_and_greedy_decoding_reproduces_captions(overfit):
    model, vocab, features, losses = overfit
    assert losses[-1] < 0.05 < losses[0]
    steps = numpy_steps(model, vocab)
    results = beam_search(steps.step, steps.initial_state(features), 3, vocab.start_id, vocab.end_id,
                          beam_size=1, max_length=10, banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id))
    assert [vocab.decode(hyps[0].tokens) for hyps in results] == CAPTIONS


def test_word_step_matches_the_full_model(overfit):
    """Every row of a batch, every position, the whole distribution: a per-row normalisation slip
    that still ranks each row's best word first would show here."""
    model, vocab, features, _ = overfit
    length = min(len(c.split()) for c in CAPTIONS) + 1
    words = np.array([vocab.encode(c.split())[:length] for c in CAPTIONS], np.int32)
    full = keras.ops.log_softmax(model([features, words], training=False), axis=-1).numpy()
    steps = numpy_steps(model, vocab)
    state = steps.initial_state(features)
    for t in range(length):
        log_probs, state = steps.step(words[:, t], state)
        np.testing.assert_allclose(log_probs, full[:, t], atol=1e-5)


def test_weights_of_the_wrong_shape_are_refused(overfit):
    model, vocab, _, _ = overfit
    weights = layer_weights(model)
    weights["lstm"] = weights["lstm"][:2]
    with pytest.raises(ValueError, match="layer 'lstm'"):
        DecoderSteps(weights, {"vocab_size": len(vocab), "architecture": {"units": 32, "embedding_dim": 16},
                               "encoder": {"feature_dim": 16}})


def test_padding_does_not_change_the_loss():
    targets = np.array([[5, 6, 2, 0, 0]])
    logits = np.random.default_rng(0).normal(size=(1, 5, 8)).astype(np.float32)
    unpadded = masked_loss(targets[:, :3], logits[:, :3]).numpy()
    assert masked_loss(targets, logits).numpy() == pytest.approx(unpadded)



def test_caption_sequences_frame_and_pad():
    dataset = SimpleNamespace(captions={"x.jpg": ["A dog turns left .", "The dog is on the right ."]})
    vocab = Vocabulary.build([["a", "dog", "turns", "left", "the", "is", "on", "right"]], min_count=1)
    index, sequences = caption_sequences(dataset, ["x.jpg"], vocab, max_words=5)
    assert index.tolist() == [0, 0] and sequences.shape == (2, 7)
    assert sequences[0].tolist()[:6] == vocab.encode(["a", "dog", "turns", "left"]) and sequences[0][-1] == vocab.pad_id
    assert vocab.decode(sequences[1][1:]) == "the dog is on the"  # cut at max_words, still ended
    assert sequences[1][-1] == vocab.end_id


def test_captions_never_hold_padding_start_or_unknown_words():
    """captioner.decode bans them from the search itself: Vocabulary.decode would only hide them,
    leaving captions with holes (here: an empty one)."""
    from pipeline.captioner import decode
    vocab = Vocabulary.build([["dog", "runs"]], min_count=1)

    class FavoursSpecialTokens:
        def initial_state(self, features):
            return (np.zeros(len(features)),)

        def step(self, tokens, state):
            log_probs = np.full((len(tokens), len(vocab)), -10.0)
            log_probs[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = 0.0
            log_probs[:, vocab.index["dog"]], log_probs[:, vocab.end_id] = -5.0, -6.0
            return log_probs, state

    captions = decode(FavoursSpecialTokens(), vocab, np.zeros((2, 4)), beam_size=3, max_length=4, n_best=3,
                      fluent=False)  # the model's own captions: fluency rules would ban "dog dog"
    assert [c.text for c in captions[0]] == ["dog", "dog dog", "dog dog dog dog"]  # the last cut at 4 words
    assert captions[0][0].log_prob == pytest.approx(-11.0)


def test_dev_cider_scores_the_models_own_captions(overfit):
    """The score that picks the kept model: the overfit decoder writes exactly CAPTIONS, so its dev
    CIDEr-D is pycocoevalcap's for those captions against these references, and not another's."""
    from pycocoevalcap.cider.cider import Cider

    from pipeline.metrics import python_tokenize
    from pipeline.training import DevCider
    model, vocab, features, _ = overfit
    references = [[c, c.replace("a ", "the ")] for c in CAPTIONS]
    config = {"vocab_size": len(vocab), "max_length": 10,
              "architecture": {"name": "merge-lstm", "units": 32, "embedding_dim": 16},
              "encoder": {"feature_dim": 16}}
    callback = DevCider(features, references, vocab, config)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    refs = python_tokenize(dict(enumerate(references)))
    expected = Cider().compute_score(refs, python_tokenize({i: [c] for i, c in enumerate(CAPTIONS)}))[0]
    shuffled = Cider().compute_score(refs, python_tokenize({i: [c] for i, c in enumerate(CAPTIONS[1:] + CAPTIONS[:1])}))[0]
    assert logs["val_cider"] == pytest.approx(expected) and expected > shuffled


ENSEMBLE_CONFIG = {"vocab_size": 12, "encoder": {"feature_dim": 6},
                   "architecture": {"name": "ensemble", "members": [
                       {"name": "merge-lstm", "units": 8, "embedding_dim": 4, "dropout": 0.0},
                       {"name": "merge-lstm", "units": 5, "embedding_dim": 3, "dropout": 0.0}]}}


def ensemble_config(mean: str | None) -> dict:
    """ENSEMBLE_CONFIG averaging by `mean`; None: naming no mean, as folders written before did."""
    architecture = ENSEMBLE_CONFIG["architecture"] | ({"mean": mean} if mean else {})
    return ENSEMBLE_CONFIG | {"architecture": architecture}


def random_ensemble(config: dict = ENSEMBLE_CONFIG):
    """The Keras ensemble of two differently sized members, with random weights (biases too)."""
    from pipeline.decoder import build_keras

    keras.utils.set_random_seed(3)
    model = build_keras(config)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("mean", ["geometric", "arithmetic", None])
def test_the_ensemble_step_is_the_mean_of_its_members_steps(mean):
    from pipeline.decoder import decoder_steps, member_prefix

    config = ensemble_config(mean)
    weights = layer_weights(random_ensemble(config))
    members = [DecoderSteps(weights, config, member, member_prefix(i))
               for i, member in enumerate(config["architecture"]["members"])]
    ensemble = decoder_steps(weights, config)
    features = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    ensemble_state, member_states = ensemble.initial_state(features), [m.initial_state(features) for m in members]
    for tokens in ([1, 1, 1], [4, 7, 9], [5, 5, 2]):
        log_probs, ensemble_state = ensemble.step(np.array(tokens), ensemble_state)
        stepped = [m.step(np.array(tokens), s) for m, s in zip(members, member_states)]
        member_states = [state for _, state in stepped]
        if mean == "geometric":  # proportional to the product of the members' probabilities
            product = np.prod([np.exp(lp) for lp, _ in stepped], axis=0) ** (1 / len(members))
            expected = product / product.sum(axis=1, keepdims=True)
        else:
            expected = np.mean([np.exp(lp) for lp, _ in stepped], axis=0)
        np.testing.assert_allclose(np.exp(log_probs), expected, rtol=1e-5)
        np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("mean", ["geometric", "arithmetic"])
def test_the_keras_ensemble_and_its_numpy_steps_agree(mean):
    """Teacher forcing through the Keras ensemble (training, scst.py) gives the log-probabilities
    that the NumPy steps (captioning) give word by word, for every row of a batch."""
    from pipeline.decoder import decoder_steps

    config = ensemble_config(mean)
    model = random_ensemble(config)
    assert model.output.dtype == "float32"
    features = np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32)
    words = np.array([[1, 4, 7, 9], [1, 5, 5, 6], [1, 11, 4, 8]])
    full = keras.ops.convert_to_numpy(keras.ops.log_softmax(model([features, words]), axis=-1))
    steps = decoder_steps(layer_weights(model), config)
    state = steps.initial_state(features)
    for t in range(words.shape[1]):
        log_probs, state = steps.step(words[:, t], state)
        np.testing.assert_allclose(log_probs, full[:, t], atol=1e-4)


@pytest.mark.parametrize("rows", range(1, 7))
def test_rows_times_is_the_matrix_product_for_any_number_of_rows(rows):
    from pipeline.numpy_layers import rows_times

    rng = np.random.default_rng(rows)
    x, kernel = rng.normal(size=(rows, 16)).astype(np.float32), rng.normal(size=(16, 40)).astype(np.float32)
    np.testing.assert_allclose(rows_times(x, kernel), x @ kernel, rtol=1e-5, atol=1e-5)
    assert rows_times(x, kernel).shape == (rows, 40)


def test_log_softmax_of_large_logits_stays_finite():
    from pipeline.numpy_layers import log_softmax

    out = log_softmax(np.array([[1000.0, 0.0, -1000.0], [3.0, 3.0, 3.0]]))
    np.testing.assert_allclose(out, [[0.0, -1000.0, -2000.0], [-np.log(3)] * 3])

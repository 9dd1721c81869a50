"""The attention decoder: it learns a tiny synthetic dataset, its NumPy step agrees with the Keras
model (next-word log-probabilities and attention weights), and the beam carries each word's weights."""
import keras
import numpy as np
import pytest

from pipeline import attention
from pipeline.beam_search import beam_search
from pipeline.captioner import decode, looks_at_regions
from pipeline.decoder import DECODERS, DecoderSteps, decoder_steps, layer_weights
from pipeline.training import make_dataset, masked_loss
from pipeline.vocab import Vocabulary

CAPTIONS = ["a dog runs through the grass", "two children play on the beach", "a man rides a red bike"]
REGIONS, FEATURES = 9, 12  # a 3x3 grid


def tiny_config(vocab) -> dict:
    return {"vocab_size": len(vocab), "max_length": 10,
            "architecture": {"name": attention.NAME, "units": 24, "embedding_dim": 16, "attention_dim": 8,
                             "dropout": 0.0},
            "encoder": {"feature_dim": FEATURES, "pooling": "grid"}}


@pytest.fixture(scope="module")
def overfit():
    keras.utils.set_random_seed(1)
    vocab = Vocabulary.build([c.split() for c in CAPTIONS], min_count=1)
    grids = np.random.default_rng(0).normal(size=(3, REGIONS, FEATURES)).astype(np.float16)
    sequences = np.zeros((3, 8), np.int32)
    for row, caption in zip(sequences, CAPTIONS):
        ids = vocab.encode(caption.split())
        row[:len(ids)] = ids
    config = tiny_config(vocab)
    model = DECODERS[attention.NAME].build(config)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=masked_loss)
    ds = make_dataset(grids, np.arange(3, dtype=np.int32), sequences, batch_size=3, shuffle=True)
    history = model.fit(ds, epochs=120, verbose=0)
    return model, vocab, grids.astype(np.float32), config, history.history["loss"]


def test_tiny_attention_decoder_overfits_and_greedy_decoding_reproduces_captions(overfit):
    model, vocab, grids, config, losses = overfit
    assert losses[-1] < 0.05 < losses[0]
    steps = decoder_steps(layer_weights(model), config)
    results = beam_search(steps.step, steps.initial_state(grids), 3, vocab.start_id, vocab.end_id,
                          beam_size=1, max_length=10, banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id))
    assert [vocab.decode(hyps[0].tokens) for hyps in results] == CAPTIONS


def test_word_step_and_its_attention_match_the_keras_model(overfit):
    """Every row, every position: the whole next-word distribution and the weights over the regions."""
    model, vocab, grids, config, _ = overfit
    length = min(len(c.split()) for c in CAPTIONS) + 1
    words = np.array([vocab.encode(c.split())[:length] for c in CAPTIONS], np.int32)
    full = keras.ops.log_softmax(model([grids, words], training=False), axis=-1).numpy()
    looked = keras.Model(model.inputs, model.get_layer(attention.ATTENTION_LAYER).output)([grids, words]).numpy()
    assert looked.shape == (3, length, REGIONS)
    steps = decoder_steps(layer_weights(model), config)
    state = steps.initial_state(grids)
    for t in range(length):
        log_probs, state, weights = steps.attended_step(words[:, t], state)
        np.testing.assert_allclose(log_probs, full[:, t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(weights, looked[:, t], atol=1e-6)
        np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)
        assert weights.std(axis=1).min() > 1e-4  # the regions are told apart, not weighed alike


def test_the_beam_carries_the_weights_each_word_was_chosen_with(overfit):
    model, vocab, grids, config, _ = overfit
    steps = decoder_steps(layer_weights(model), config)
    for grid, caption, best in zip(grids, CAPTIONS, decode(steps, vocab, grids, 3, 10, n_best=3)):
        assert [c.looked.shape for c in best] == [(len(c.text.split()), 3, 3) for c in best]
        assert best[0].text == caption
        np.testing.assert_allclose(best[0].looked.sum(axis=(1, 2)), 1, atol=1e-6)
        # the same weights as the word steps give along the caption, teacher-forced
        ids = vocab.encode(caption.split())
        state = steps.initial_state(grid[None])
        for t, expected in enumerate(best[0].looked):
            _, state, weights = steps.attended_step(np.array([ids[t]]), state)
            np.testing.assert_allclose(weights[0].reshape(3, 3), expected, atol=1e-6)


def test_a_traced_search_keeps_each_hypothesis_trace_in_step():
    """A fake step whose trace is the row's own last token: each hypothesis' trace must be its tokens
    shifted by one (start first), whichever beams it passed through."""
    vocab_size, start, end = 6, 0, 1
    rng = np.random.default_rng(3)
    table = np.log(rng.dirichlet(np.ones(vocab_size), size=(vocab_size, vocab_size)))

    def step(tokens, state):
        (previous,) = state
        return table[previous, tokens], (tokens.copy(),), tokens.copy()

    results = beam_search(step, (np.array([2, 3]),), 2, start, end, beam_size=3, max_length=6, n_best=3,
                          traced=True)
    for hyps in results:
        for h in hyps:
            assert list(h.trace) == [start, *h.tokens[:-1]]


def test_a_decoder_without_attention_has_no_maps(overfit):
    _, vocab, grids, _, _ = overfit
    rng = np.random.default_rng(0)
    units, embedding = 4, 3
    merge = DecoderSteps({"image_projection": [rng.normal(size=(FEATURES, units)), np.zeros(units)],
                          "embedding": [rng.normal(size=(len(vocab), embedding))],
                          "lstm": [rng.normal(size=(embedding, 4 * units)), rng.normal(size=(units, 4 * units)),
                                   np.zeros(4 * units)],
                          "merge_projection": [rng.normal(size=(units, units)), np.zeros(units)],
                          "word_logits": [rng.normal(size=(units, len(vocab))), np.zeros(len(vocab))]},
                         {"vocab_size": len(vocab), "architecture": {"units": units, "embedding_dim": embedding},
                          "encoder": {"feature_dim": FEATURES}})
    assert not looks_at_regions(merge)
    # it reads a grid as its mean, as an ensemble member beside attention members would
    on_grids, on_means = decode(merge, vocab, grids, 3, 10), decode(merge, vocab, grids.mean(axis=1), 3, 10)
    assert [b[0] for b in on_grids] == [b[0] for b in on_means]
    assert all(b[0].looked is None for b in on_grids)


def test_weights_of_the_wrong_shape_are_refused(overfit):
    model, _, _, config, _ = overfit
    weights = layer_weights(model)
    weights["attention_score"] = [np.zeros((3, 1))]
    with pytest.raises(ValueError, match="layer 'attention_score'"):
        decoder_steps(weights, config)


def test_pooled_features_are_refused_with_the_reason(overfit):
    model, _, grids, config, _ = overfit
    with pytest.raises(ValueError, match="grid of regions"):
        decoder_steps(layer_weights(model), config).initial_state(grids.mean(axis=1))


def test_a_mixed_ensemble_steps_as_its_keras_model(overfit):
    """A merge member (reading the grid's mean) beside an attention member: the NumPy ensemble's
    next-word distribution matches the Keras ensemble's, and its weights are its attention member's."""
    from pipeline.decoder import build_ensemble

    _, vocab, grids, _, _ = overfit
    keras.utils.set_random_seed(4)
    members = [{"name": "merge-lstm", "units": 8, "embedding_dim": 6, "dropout": 0.0},
               {"name": attention.NAME, "units": 8, "embedding_dim": 6, "attention_dim": 5, "dropout": 0.0}]
    config = {"vocab_size": len(vocab), "architecture": {"name": "ensemble", "mean": "geometric", "members": members},
              "encoder": {"feature_dim": FEATURES}}
    model = build_ensemble(len(vocab), members, FEATURES, "geometric")
    words = np.array([vocab.encode(c.split())[:5] for c in CAPTIONS], np.int32)
    full = model([grids, words]).numpy()
    looked = keras.Model(model.inputs, model.get_layer("member1_" + attention.ATTENTION_LAYER).output)(
        [grids, words]).numpy()
    steps = decoder_steps(layer_weights(model), config)
    assert looks_at_regions(steps)
    state = steps.initial_state(grids)
    for t in range(words.shape[1]):
        log_probs, state, weights = steps.attended_step(words[:, t], state)
        np.testing.assert_allclose(log_probs, full[:, t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(weights, looked[:, t], atol=1e-6)


def test_ensemble_py_joins_a_merge_and_an_attention_folder(tiny_model, tiny_attention_model, random_grid_encoder,
                                                           tmp_path):
    """The ensemble reads the grid (the attention member's encoder); its captions carry maps."""
    import ensemble
    from pipeline import Captioner
    from pipeline.artifact import read_config
    from conftest import write_image

    out = tmp_path / "ensemble"
    ensemble.main([str(tiny_model), str(tiny_attention_model), "--out", str(out)])
    config = read_config(out)
    assert config["encoder"]["pooling"] == "grid"
    assert [m["name"] for m in config["architecture"]["members"]] == ["merge-lstm", attention.NAME]
    captioner = Captioner.from_pretrained(out, image_encoder=random_grid_encoder)
    best = captioner.describe(write_image(tmp_path / "photo.png", 0, size=(64, 48))).n_best[0]
    assert best.text and best.looked.shape == (len(best.text.split()), 10, 10)


def test_an_ensemble_folder_gives_its_members_to_a_new_ensemble(tiny_model, tiny_attention_model,
                                                                random_grid_encoder, tmp_path):
    """ensemble.py on (an ensemble of two merge folders, an attention folder) writes the ensemble of
    the three: the same captions and maps as ensemble.py on the three folders themselves."""
    import shutil

    import ensemble
    from pipeline import Captioner
    from pipeline.artifact import read_config
    from conftest import write_image

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    ensemble.main([str(tiny_model), str(other), "--out", str(tmp_path / "two"), "--weights-dtype", "float32"])
    ensemble.main([str(tmp_path / "two"), str(tiny_attention_model), "--out", str(tmp_path / "nested"),
                   "--weights-dtype", "float32"])
    ensemble.main([str(tiny_model), str(other), str(tiny_attention_model), "--out", str(tmp_path / "flat"),
                   "--weights-dtype", "float32"])
    nested, flat = read_config(tmp_path / "nested"), read_config(tmp_path / "flat")
    assert nested["architecture"] == flat["architecture"]
    assert [e["folder"] for e in nested["training"]["ensemble_of"]] == ["two/" + tiny_model.name, "two/other",
                                                                        tiny_attention_model.name]
    photo = write_image(tmp_path / "photo.png", 1, size=(64, 48))
    found = [Captioner.from_pretrained(tmp_path / name, image_encoder=random_grid_encoder).describe(photo).n_best[0]
             for name in ("nested", "flat")]
    assert found[0].text == found[1].text
    np.testing.assert_allclose(found[0].looked, found[1].looked, atol=1e-6)

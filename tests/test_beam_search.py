"""Beam search against brute force, driven by a fake step function over a tiny vocabulary."""
import itertools

import numpy as np
import pytest

from pipeline.beam_search import beam_search

PAD, START, END = 0, 1, 2
WORDS = (3, 4, 5)
VOCAB = 6


def log_probs_after(code: int) -> np.ndarray:
    """A fixed but arbitrary next-word distribution for each history (its code)."""
    logits = np.random.default_rng(code).normal(scale=2.0, size=VOCAB)
    return logits - np.log(np.exp(logits).sum())


def fake_step(tokens, state):
    (codes,) = state
    codes = codes * 7 + tokens + 1  # the state encodes the whole history, as an LSTM state would
    return np.stack([log_probs_after(int(c)) for c in codes]), (codes,)


def brute_force(seed: int, max_length: int):
    """Every caption of 1 to max_length words (ended or cut off), with its log-probability."""
    scored = []
    for length in range(1, max_length + 1):
        for words in itertools.product(WORDS, repeat=length - 1):
            for last in WORDS + (END,):
                sequence, code, total = (START,) + words + (last,), seed, 0.0
                if last != END and length < max_length:
                    continue  # an open caption only counts when it hit the length limit
                if last == END and not words:
                    continue  # the empty caption is never an answer
                for prev, nxt in zip(sequence, sequence[1:]):
                    code = code * 7 + prev + 1
                    total += log_probs_after(code)[nxt]
                scored.append((sequence[1:], total))
    return sorted(scored, key=lambda s: -s[1])


def search(seeds, beam_size, max_length, n_best):
    return beam_search(fake_step, (np.array(seeds, np.int64),), len(seeds), START, END, beam_size,
                       max_length, n_best, banned_ids=(PAD, START))


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_wide_beam_finds_the_brute_force_n_best(seed):
    # 3 words and at most 3 steps: 9 open prefixes at most, so a beam of 10 is exhaustive
    exact = brute_force(seed, max_length=3)[:5]
    found = search([seed], beam_size=10, max_length=3, n_best=5)[0]
    assert [h.tokens for h in found] == [tokens for tokens, _ in exact]
    np.testing.assert_allclose([h.log_prob for h in found], [score for _, score in exact], rtol=1e-9)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_beam_of_one_is_greedy(seed):
    code, token, greedy, total = seed, START, [], 0.0
    while len(greedy) < 6:
        code = code * 7 + token + 1
        log_probs = log_probs_after(code)
        log_probs[[PAD, START]] = -np.inf
        token = int(log_probs.argmax())
        total += log_probs[token]
        greedy.append(token)
        if token == END:
            break
    (best,) = search([seed], beam_size=1, max_length=6, n_best=1)[0]
    assert best.tokens == tuple(greedy)
    assert best.log_prob == pytest.approx(total)


def test_batch_matches_one_by_one_and_never_emits_banned_tokens():
    seeds = [31, 32, 33, 34]
    batched = search(seeds, beam_size=3, max_length=5, n_best=3)
    for seed, hyps in zip(seeds, batched):
        assert hyps == search([seed], beam_size=3, max_length=5, n_best=3)[0]
        assert all(PAD not in h.tokens and START not in h.tokens for h in hyps)
        assert [h.log_prob for h in hyps] == sorted((h.log_prob for h in hyps), reverse=True)


@pytest.mark.parametrize("beam_size, n_best", [(0, 1), (11, 1), (3, 4)])
def test_bad_arguments(beam_size, n_best):
    with pytest.raises(ValueError):
        search([1], beam_size, 3, n_best)


def test_a_caption_always_has_a_word_even_when_the_model_would_end_at_once():
    def ends_at_once(tokens, state):  # an undertrained model: the end token is by far the likeliest
        log_probs = np.full((len(tokens), VOCAB), -20.0)
        log_probs[:, END] = 0.0
        return log_probs, state

    for beam_size in (1, 3):
        hyps = beam_search(ends_at_once, (np.zeros(2),), 2, START, END, beam_size, max_length=5,
                           n_best=beam_size, banned_ids=(PAD, START))
        assert all(h.tokens[0] in WORDS and h.tokens[1:] == (END,) for found in hyps for h in found)

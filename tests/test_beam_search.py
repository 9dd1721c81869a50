"""Beam search against brute force, driven by a fake step function over a tiny vocabulary."""
import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.beam_search import FluencyRules, beam_search

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


@pytest.mark.parametrize("beam_size, n_best, message", [
    (0, 1, "beam_size must be between 1 and 10, got 0"), (11, 1, "beam_size must be between 1 and 10, got 11"),
    (3, 4, "n_best must be between 1 and beam_size (3), got 4")])
def test_bad_arguments(beam_size, n_best, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        search([1], beam_size, 3, n_best)


def test_inputs_that_finish_early_leave_the_others_searching():
    """A batch whose inputs finish at different steps: each gets what it gets alone."""
    seeds = list(range(12))
    batched = beam_search(biased_step(1.5), (np.array(seeds, np.int64),), len(seeds), START, END, beam_size=3,
                          max_length=6, n_best=1, banned_ids=(PAD, START))
    assert batched == [search_biased(seed, 3, 6, 1, end_bias=1.5) for seed in seeds]
    assert len({len(best.tokens) for (best,) in batched}) > 1


@pytest.mark.parametrize("min_length, max_length", [(-1, 3), (4, 3)])
def test_min_length_must_be_between_zero_and_max_length(min_length, max_length):
    with pytest.raises(ValueError, match="min_length"):
        beam_search(fake_step, (np.array([1]),), 1, START, END, 3, max_length, 1, min_length=min_length)
    beam_search(fake_step, (np.array([1]),), 1, START, END, 3, max_length=3, min_length=3)  # the bounds are allowed


def test_defaults_are_beam_3_one_caption_at_most_30_words_at_least_one():
    for seed in range(30):  # seed 29's best caption differs with beams of 2, 3 and 4
        assert (search_biased(seed, 3, 30, 1, end_bias=2.0, min_length=1)
                == beam_search(biased_step(2.0), (np.array([seed], np.int64),), 1, START, END, banned_ids=(PAD, START))[0])

    def never_ends(tokens, state):
        log_probs = np.full((len(tokens), VOCAB), -np.inf)
        log_probs[:, WORDS] = np.log(1 / 3)
        return log_probs, state

    (endless,) = beam_search(never_ends, (np.zeros(1),), 1, START, END)[0]
    assert len(endless.tokens) == 30 and END not in endless.tokens


def test_the_search_stops_once_the_n_best_finished_captions_beat_or_tie_every_open_beam():
    """After "word3 <end>", whose score ties the one open beam's, nothing can beat it: no third step."""
    calls = []

    def step(tokens, state):
        calls.append(len(tokens))
        log_probs = np.full((len(tokens), VOCAB), -np.inf)
        log_probs[tokens == START, 3] = 0.0
        log_probs[np.ix_(tokens != START, [END, 4])] = np.log(0.5)
        return log_probs, state

    (best,) = beam_search(step, (np.zeros(1),), 1, START, END, beam_size=2, max_length=10, n_best=1)[0]
    assert best.tokens == (3, END) and best.log_prob == pytest.approx(np.log(0.5))
    assert len(calls) == 2


def test_a_caption_always_has_a_word_even_when_the_model_would_end_at_once():
    def ends_at_once(tokens, state):  # an undertrained model: the end token is by far the likeliest
        log_probs = np.full((len(tokens), VOCAB), -20.0)
        log_probs[:, END] = 0.0
        return log_probs, state

    for beam_size in (1, 3):
        hyps = beam_search(ends_at_once, (np.zeros(2),), 2, START, END, beam_size, max_length=5,
                           n_best=beam_size, banned_ids=(PAD, START))
        assert all(h.tokens[0] in WORDS and h.tokens[1:] == (END,) for found in hyps for h in found)


def allowed(words: tuple[int, ...], token: int, rules: FluencyRules | None) -> bool:
    """FluencyRules written out: may `words` go on with `token`?"""
    if rules is None or not words:
        return True
    if rules.repeated_word and token == words[-1]:
        return False
    if token == END and words[-1] in rules.no_end_after:
        return False
    return not (rules.repeated_bigram and (words[-1], token) in set(zip(words, words[1:])))


def reference_beam_search(seed: int, beam_size: int, max_length: int, n_best: int, end_bias: float,
                          min_length: int = 1, rules: FluencyRules | None = None):
    """The same search written plainly, one input, lists and sorting: each step ranks every
    extension of the live beams that the rules allow; those that end are finished captions, the
    best `beam_size` that do not end are the next beams; it stops once n_best finished ones beat
    every live beam."""
    beams, finished = [((), seed, START, 0.0)], []  # (words, code, last token, log-probability)
    for length in range(1, max_length + 1):
        extensions = []
        for words, code, last, score in beams:
            code = code * 7 + last + 1
            log_probs = biased_log_probs(code, end_bias)
            for token in WORDS + (END,):
                if (token != END or length > min_length) and allowed(words, token, rules):
                    extensions.append((score + log_probs[token], words + (token,), code, token))
        extensions.sort(key=lambda e: -e[0])
        beams = []
        for score, words, code, token in extensions:
            if len(beams) == beam_size:
                break
            if token == END:
                finished.append((words, score))
            else:
                beams.append((words, code, token, score))
        finished.sort(key=lambda f: -f[1])
        if len(finished) >= n_best and finished[n_best - 1][1] >= max((b[3] for b in beams), default=-np.inf):
            return finished[:n_best]
    return sorted(finished + [(words, score) for words, _, _, score in beams], key=lambda f: -f[1])[:n_best]


def biased_log_probs(code: int, end_bias: float) -> np.ndarray:
    logits = np.random.default_rng(code).normal(scale=2.0, size=VOCAB)
    logits[END] += end_bias  # how soon captions tend to end
    return logits - np.log(np.exp(logits).sum())


@pytest.mark.slow
@settings(max_examples=300, deadline=None, derandomize=True)  # the same cases every run
@given(seed=st.integers(0, 2**20), beam_size=st.integers(1, 5), n_best_share=st.floats(0, 1),
       max_length=st.integers(1, 6), end_bias=st.floats(-2, 4), min_length=st.integers(0, 1),
       rules=st.none() | st.builds(FluencyRules, st.booleans(), st.booleans(), st.frozensets(st.sampled_from(WORDS))))
def test_n_best_lists_match_a_plain_reference(seed, beam_size, n_best_share, max_length, end_bias, min_length,
                                              rules):
    """The batched search against the plain one on random models, every n-best list whole: a
    narrower candidate list, finished captions taking live beams' places, or a fluency rule
    applied to the wrong beam or not at all, shows here."""
    n_best = 1 + round(n_best_share * (beam_size - 1))
    min_length = min(min_length, max_length)
    found = search_biased(seed, beam_size, max_length, n_best, end_bias, min_length, rules)
    expected = reference_beam_search(seed, beam_size, max_length, n_best, end_bias, min_length, rules)
    assert [h.tokens for h in found] == [words for words, _ in expected]
    np.testing.assert_allclose([h.log_prob for h in found], [score for _, score in expected], rtol=1e-9)


@pytest.mark.parametrize("beam_size", [3, 5])
def test_n_best_lists_match_the_reference_where_captions_end_early(beam_size):
    """Fixed cases where captions tend to end within a few words: finished captions then often rank
    among the best extensions, the case a narrower candidate list gets wrong."""
    for seed in range(60):
        found = search_biased(seed, beam_size, max_length=5, n_best=beam_size, end_bias=1.5)
        expected = reference_beam_search(seed, beam_size, 5, beam_size, 1.5)
        assert [h.tokens for h in found] == [words for words, _ in expected], f"seed {seed}"


def biased_step(end_bias):
    def step(tokens, state):
        (codes,) = state
        codes = codes * 7 + tokens + 1
        return np.stack([biased_log_probs(int(c), end_bias) for c in codes]), (codes,)
    return step


def search_biased(seed, beam_size, max_length, n_best, end_bias, min_length=1, rules=None):
    return beam_search(biased_step(end_bias), (np.array([seed], np.int64),), 1, START, END, beam_size, max_length, n_best,
                       banned_ids=(PAD, START), min_length=min_length, rules=rules)[0]


def test_captions_are_decoded_under_the_fluency_rules():
    """captioner.decode applies fluency_rules: a model that wants "a dog a dog dog the" gets no
    repeated word, no repeated phrase and no function word at the end."""
    from pipeline.captioner import decode
    from pipeline.vocab import Vocabulary

    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "the", "runs"])
    wanted = {vocab.start_id: "a", vocab.index["a"]: "dog", vocab.index["dog"]: "a", vocab.index["the"]: "<end>",
              vocab.index["runs"]: "the"}

    class RepetitiveSteps:
        def initial_state(self, features):
            return (np.zeros(len(features)),)

        def step(self, tokens, state):
            log_probs = np.full((len(tokens), len(vocab)), np.log(0.01))
            for row, token in enumerate(tokens):
                log_probs[row, vocab.index[wanted[int(token)]]] = np.log(0.9)
            return log_probs, state

    fluent = decode(RepetitiveSteps(), vocab, np.zeros((2, 1)), beam_size=3, max_length=8)
    as_trained = decode(RepetitiveSteps(), vocab, np.zeros((2, 1)), beam_size=3, max_length=8, fluent=False)
    assert as_trained[0][0].text == "a dog a dog a dog a dog"
    for (best,) in fluent:
        words = best.text.split()
        assert words and words[-1] not in ("a", "the")
        assert all(x != y for x, y in zip(words, words[1:]))
        assert len(set(zip(words, words[1:]))) == len(words) - 1


@pytest.mark.parametrize("max_length, expected", [
    (1, [((3,), 1)]),
    (2, [((3, 2), 2), ((3, 3), 2)]),
    (3, [((3, 2), 2), ((3, 3, 2), 3), ((3, 3, 3), 3)]),
])
def test_beams_that_never_opened_are_not_captions(max_length, expected):
    """One usable word and the end (the rest banned): three beams cannot all be filled, and the
    n-best list holds only real captions, none with probability 0 (found by mutation testing)."""
    def step(tokens, state):
        return np.full((len(tokens), 4), np.log(0.5)), state

    found = beam_search(step, (np.zeros((1, 1)),), 1, start_id=1, end_id=2, beam_size=3, max_length=max_length,
                        n_best=3, banned_ids=(0, 1))[0]
    assert [(h.tokens, h.log_prob) for h in found] == [(tokens, pytest.approx(n * np.log(0.5))) for tokens, n in expected]


def test_a_traced_search_gives_each_word_what_it_was_chosen_with():
    """Each caption's trace holds, word by word, the third value the step returned for the row that
    chose the word. Here that value names the row's input, the token it was fed and its position,
    so a trace taken from another row, another input or another step shows; finished captions and
    those still open at max_length both carry theirs."""
    rng = np.random.default_rng(3)
    vocab, batch, k, end = 7, 3, 3, 1
    table = np.log(rng.dirichlet(np.ones(vocab), size=(batch, vocab)))  # (input, fed token) -> next word

    def step(tokens, state):
        inputs, position = state
        return table[inputs, tokens], (inputs, position + 1), np.stack([inputs, tokens, position], axis=1)

    start = (np.arange(batch), np.zeros(batch, np.int64))
    results = beam_search(step, start, batch, start_id=0, end_id=end, beam_size=k, max_length=4, n_best=k,
                          traced=True)
    hypotheses = [(b, h) for b, hyps in enumerate(results) for h in hyps]
    assert {h.tokens[-1] == end for _, h in hypotheses} == {True, False}  # finished and open captions both
    for b, h in hypotheses:
        fed = (0, *h.tokens[:-1])
        assert [tuple(int(v) for v in chosen) for chosen in h.trace] == [(b, w, i) for i, w in enumerate(fed)]
    untraced = beam_search(lambda tokens, state: step(tokens, state)[:2], start, batch, start_id=0, end_id=end,
                           beam_size=k, max_length=4, n_best=k)
    assert [[(h.tokens, h.log_prob) for h in hyps] for hyps in untraced] == [
        [(h.tokens, h.log_prob) for h in hyps] for hyps in results]
    assert all(h.trace == () for hyps in untraced for h in hyps)

"""Batched beam search over any step function (greedy search is beam size 1).

`step(tokens, state) -> (log_probs, state)`: tokens (N,), log_probs (N, V), state a tuple of
arrays whose first axis is N. The search keeps `beam_size` rows per input and reorders the state
rows to follow the surviving beams. A traced search's step also returns what each row's next word
was chosen with (N, ...): an attention decoder's weights over the image's regions, which each
hypothesis then carries word by word.
"""
from dataclasses import dataclass

import numpy as np


MAX_BEAM_SIZE = 10  # the widest search any entry point offers: each row costs a decoder step a word
DEFAULT_BEAM_SIZE = 3  # what every entry point searches with unless told otherwise (weights/ was tuned at it)

@dataclass(frozen=True)
class FluencyRules:
    """Continuations the search never takes, each a disfluency the merge decoder otherwise produces
    (test split, today's weights: 52 of 1000 captions repeat a phrase, 2 a word).

    repeated_word: a word right after itself ("rafting rafting").
    repeated_bigram: a two-word phrase a second time ("a man and a man", "on a dock by a dock").
    no_end_after: token ids the caption may not end on (function words: "a dog runs through the").
    """
    repeated_word: bool = True
    repeated_bigram: bool = True
    no_end_after: frozenset[int] = frozenset()

    def apply(self, log_probs: np.ndarray, tokens: np.ndarray, histories: list[tuple[int, ...]], end_id: int):
        """Set the log-probability of each row's ruled-out next tokens to -inf, in place.
        Row r continues `histories[r]`, whose last token is `tokens[r]`."""
        if self.repeated_word:
            log_probs[np.arange(len(tokens)), tokens] = -np.inf
        if self.no_end_after:
            log_probs[np.isin(tokens, list(self.no_end_after)), end_id] = -np.inf
        if self.repeated_bigram:
            for row, history in enumerate(histories):
                seen = [after for before, after in zip(history, history[1:]) if before == history[-1]]
                log_probs[row, seen] = -np.inf


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # without the start token, with the end token if it finished
    log_prob: float
    trace: tuple = ()  # a traced search's: what each of the tokens was chosen with


def beam_search(step, state, batch_size: int, start_id: int, end_id: int, beam_size: int = DEFAULT_BEAM_SIZE,
                max_length: int = 30, n_best: int = 1, banned_ids=(), min_length: int = 1,
                rules: FluencyRules | None = None, traced: bool = False) -> list[list[Hypothesis]]:
    """The `n_best` most probable captions of each of `batch_size` inputs, best first.

    A caption is finished by the end token; one still open after `max_length` words is returned
    as it stands. Tokens in `banned_ids` (pad, start, unknown) are never generated, and the end
    token not before `min_length` words: a model that has learnt little would otherwise often end
    at once, and an empty caption is no answer. `rules` rule out disfluent continuations. `traced`:
    `step` returns a third value, kept in each hypothesis' trace.
    """
    if not 1 <= beam_size <= MAX_BEAM_SIZE:
        raise ValueError(f"beam_size must be between 1 and {MAX_BEAM_SIZE}, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"min_length must be between 0 and max_length ({max_length}), got {min_length}")
    k = beam_size
    rows = np.repeat(np.arange(batch_size), k)
    state = tuple(s[rows] for s in state)
    tokens = np.full(batch_size * k, start_id, np.int64)
    scores = np.full((batch_size, k), -np.inf)
    scores[:, 0] = 0.0  # one live beam per input at first, so the k beams do not start as copies
    histories = [[()] * k for _ in range(batch_size)]
    traces = [[()] * k for _ in range(batch_size)]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    done = np.zeros(batch_size, bool)
    banned = list(banned_ids)

    for length in range(1, max_length + 1):
        log_probs, state, *chosen_with = step(tokens, state)
        log_probs = np.array(log_probs, np.float64)
        log_probs[:, banned] = -np.inf
        if length <= min_length:
            log_probs[:, end_id] = -np.inf
        if rules is not None:
            rules.apply(log_probs, tokens, [h for beams in histories for h in beams], end_id)
        vocab = log_probs.shape[1]
        candidates = (scores[:, :, None] + log_probs.reshape(batch_size, k, vocab)).reshape(batch_size, -1)
        # 2k candidates always hold k that do not end (each beam ends at most one way)
        width = min(2 * k, candidates.shape[1])
        top = np.argpartition(-candidates, width - 1, axis=1)[:, :width]
        order = np.take_along_axis(candidates, top, 1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)

        parents = np.zeros((batch_size, k), np.int64)
        new_tokens = np.full((batch_size, k), end_id, np.int64)
        new_scores = np.full((batch_size, k), -np.inf)
        new_histories = [[()] * k for _ in range(batch_size)]
        new_traces = [[()] * k for _ in range(batch_size)]
        for b in range(batch_size):
            if done[b]:
                continue
            live = 0
            for flat in top[b]:
                score = candidates[b, flat]
                if score == -np.inf or live == k:
                    break
                beam, word = divmod(int(flat), vocab)
                history = histories[b][beam] + (word,)
                trace = traces[b][beam] + (chosen_with[0][b * k + beam],) if traced else ()
                if word == end_id:
                    finished[b].append(Hypothesis(history, float(score), trace))
                else:
                    parents[b, live], new_tokens[b, live], new_scores[b, live] = beam, word, score
                    new_histories[b][live], new_traces[b][live] = history, trace
                    live += 1
            finished[b].sort(key=lambda h: -h.log_prob)
            # scores only fall as captions grow, so no open beam can beat n_best finished ones
            if len(finished[b]) >= n_best and finished[b][n_best - 1].log_prob >= new_scores[b].max():
                done[b] = True
        if done.all():
            break
        state = tuple(s[(np.arange(batch_size)[:, None] * k + parents).ravel()] for s in state)
        tokens, scores, histories, traces = new_tokens.ravel(), new_scores, new_histories, new_traces

    results = []
    for b in range(batch_size):
        if not done[b]:  # out of length: open beams compete as they stand
            finished[b] += [Hypothesis(histories[b][i], float(scores[b, i]), traces[b][i])
                            for i in range(k) if scores[b, i] > -np.inf]
            finished[b].sort(key=lambda h: -h.log_prob)
        results.append(finished[b][:n_best])
    return results

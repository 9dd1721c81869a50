"""Self-critical sequence training (Rennie et al. 2017): fine-tune a decoder on the score its own
sampled captions get, CIDEr-D against the image's references.

Each image gets `samples` captions drawn from the decoder at a temperature. A caption's baseline
is the mean reward of the image's other samples (Luo 2020), or the reward of its greedy caption
(Rennie et al.). Measured on Flickr8k dev (README): sampled at temperature 1, the samples score
far below the decoder's own best captions, and one epoch made it blander (CIDEr-D 0.465 -> 0.419
with the samples' mean, 0.217 with the greedy baseline); at 0.5 it rose to 0.490. The end of a
caption is scored as a word ("<end>", in the references too): a caption cut off mid-phrase ("a
man in a") then misses the n-grams that every reference ends with, where plain CIDEr-D would not
notice.
"""
import math
from collections import Counter

import numpy as np
from pycocoevalcap.cider.cider_scorer import precook

from .decoder import Steps
from .metrics import python_tokenize

END_WORD = "<end>"  # how a finished caption's end is scored; PTB tokenisation leaves no word like it


class CiderD:
    """pycocoevalcap's CIDEr-D for one caption at a time, with the document frequencies of a fixed
    reference corpus (the training captions, counted once) instead of those of each batch.

    With `references` as the corpus, `score(key, caption)` is what pycocoevalcap's Cider gives that
    caption among those references. Each reference's tf-idf vector is computed once.
    """

    def __init__(self, references: dict, n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        counted = {key: [precook(ref, n) for ref in refs] for key, refs in references.items()}
        self.document_frequency = Counter(ngram for refs in counted.values()
                                          for ngram in {ngram for ref in refs for ngram in ref})
        self.log_corpus_size = math.log(len(counted))
        self.references = {key: [self._vector(ref) for ref in refs] for key, refs in counted.items()}

    def _vector(self, counts: dict) -> tuple[list[dict], np.ndarray, int]:
        """tf-idf weights per n-gram order, their norms, and the length (pycocoevalcap counts bigrams)."""
        vector, length = [{} for _ in range(self.n)], 0
        for ngram, term_frequency in counts.items():
            order = len(ngram) - 1
            idf = self.log_corpus_size - math.log(max(1.0, self.document_frequency.get(ngram, 0.0)))
            vector[order][ngram] = term_frequency * idf
            if order == 1:
                length += term_frequency
        norms = np.array([math.sqrt(sum(w * w for w in v.values())) for v in vector])
        return vector, norms, length

    def score(self, key, caption: str) -> float:
        vector, norms, length = self._vector(precook(caption, self.n))
        total = np.zeros(self.n)
        references = self.references[key]
        for ref_vector, ref_norms, ref_length in references:
            similarity = np.array([sum(min(w, ref_vector[order].get(ngram, 0.0)) * ref_vector[order].get(ngram, 0.0)
                                       for ngram, w in vector[order].items()) for order in range(self.n)], float)
            both = (norms != 0) & (ref_norms != 0)
            similarity[both] /= norms[both] * ref_norms[both]
            total += similarity * math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
        return float(total.mean() / len(references) * 10.0)

    def captions(self, keys: list, captions: np.ndarray, vocab) -> np.ndarray:
        """The reward of each row of token ids (sample_captions) against its key's references; a
        finished caption's end counts as the word END_WORD."""
        return np.array([self.score(key, vocab.decode(ids) + (f" {END_WORD}" if vocab.end_id in ids else ""))
                         for key, ids in zip(keys, captions.tolist())])


def reward_references(references: dict[str, list[str]]) -> dict[str, list[str]]:
    """References tokenized as evaluation tokenizes them, each ending on END_WORD."""
    return {key: [f"{ref} {END_WORD}" for ref in refs] for key, refs in python_tokenize(references).items()}


def sample_captions(steps: Steps, features: np.ndarray, samples: int, max_length: int, start_id: int,
                    end_id: int, banned_ids, rng: np.random.Generator | None, temperature: float = 1.0) -> np.ndarray:
    """`samples` captions per feature row drawn from the decoder, (rows * samples, max_length) token ids:
    each row's words, then its end token, then padding (0); a caption still open at max_length has no end.
    With `rng` None, the greedy caption: each step's most probable word. A temperature below 1
    draws from the sharpened distribution softmax(logits / temperature)."""
    rows = np.repeat(np.arange(len(features)), samples)
    state = tuple(s[rows] for s in steps.initial_state(features))
    tokens = np.full(len(rows), start_id, np.int64)
    out = np.zeros((len(rows), max_length), np.int64)
    open_rows = np.ones(len(rows), bool)
    banned = list(banned_ids)
    for t in range(max_length):
        log_probs, state = steps.step(tokens, state)
        log_probs[:, banned] = -np.inf
        if t == 0:
            log_probs[:, end_id] = -np.inf  # an empty caption is never an answer
        # Gumbel-max: the argmax of log-probabilities plus Gumbel noise is a draw from the softmax
        if rng is None:
            tokens = np.argmax(log_probs, axis=1)
        else:
            tokens = np.argmax(log_probs / temperature + rng.gumbel(size=log_probs.shape), axis=1)
        out[open_rows, t] = tokens[open_rows]
        open_rows &= tokens != end_id
        if not open_rows.any():
            break
    return out


BASELINES = ("greedy", "samples")


def leave_one_out_advantages(rewards: np.ndarray, samples: int) -> np.ndarray:
    """Each sample's reward minus the mean reward of its image's other samples."""
    per_image = rewards.reshape(-1, samples)
    others = (per_image.sum(axis=1, keepdims=True) - per_image) / (samples - 1)
    return (per_image - others).ravel()


class SelfCriticalStep:
    """One self-critical update of a Keras decoder: raise the log-probability of the sampled
    captions that beat their image's other samples, lower it for those that did not, in
    proportion to the margin. The decoder runs without dropout, as the captions were sampled.
    TensorFlow is imported when a step is made (scst.py reads this module's settings before).
    """

    def __init__(self, model, temperature: float = 1.0):
        import tensorflow as tf

        self.model, self.temperature = model, temperature
        # one trace per caption-length shape, not per batch
        self._update = tf.function(self._loss_and_update, reduce_retracing=True)

    def __call__(self, features, words, targets, advantages):
        return self._update(features, words, targets, advantages)

    def _loss_and_update(self, features, words, targets, advantages):
        import keras
        import tensorflow as tf

        with tf.GradientTape() as tape:
            # the distribution the captions were drawn from (sample_captions' temperature)
            logits = self.model({"features": features, "words": words}, training=False) / self.temperature
            mask = tf.cast(targets != 0, logits.dtype)
            log_probs = -keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            loss = -tf.reduce_mean(advantages * tf.reduce_sum(log_probs * mask, axis=1))
        variables = self.model.trainable_variables
        self.model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

"""Caption metrics through the COCO caption evaluation code (pycocoevalcap).

Each image is scored against its own references only. BLEU-1..4, METEOR, ROUGE-L and CIDEr-D
are pycocoevalcap's; the bootstrap intervals resample images over the per-image statistics that
pycocoevalcap's own BLEU and CIDEr code produce, so they need no new pass per resample.
"""
import logging
import os
import re
import shutil

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

from .vocab import FUNCTION_WORDS

log = logging.getLogger(__name__)

BLEU_N = 4
# pycocoevalcap's BleuScorer constants, so corpus_bleu() reproduces its arithmetic exactly
BLEU_TINY, BLEU_SMALL = 1e-15, 1e-9


def java_available() -> bool:
    return shutil.which("java") is not None


# PTB's -lowerCase turns brackets into "-lrb-" and the like, which pycocoevalcap's (upper-case)
# punctuation list then keeps as words; the fallback does the same to give the same scores.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def python_tokenize(captions: dict) -> dict:
    """The PTB tokenizer's output without Java: lowercase, clitics split off, punctuation and quotes
    dropped. It differs on 20 of Flickr8k's 40,455 captions (abbreviations like "mr.", web addresses)."""
    out = {}
    for key, sentences in captions.items():
        tokenized = []
        for sentence in sentences:
            sentence = re.sub(r"[()\[\]{}]", lambda m: f" {_BRACKETS[m.group()]} ", sentence.lower())
            sentence = re.sub(r"([.,!?;:&`]|--)", r" \1 ", sentence.replace('"', " "))
            sentence = re.sub(r"\bcannot\b", "can not", sentence)
            sentence = re.sub(r"(\w)('s|'re|'ve|'ll|'d|n't)\b", r"\1 \2", sentence)
            tokenized.append(" ".join(w for w in sentence.split() if w not in PUNCTUATIONS))
        out[key] = tokenized
    return out


def tokenize(captions: dict, use_java: bool) -> dict:
    if use_java:
        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return python_tokenize(captions)


def corpus_bleu(totals: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from summed per-image statistics (..., 2 + 2n), pycocoevalcap's formula.

    Columns: hypothesis length, closest reference length, n-gram guesses (n), clipped matches (n).
    """
    testlen, reflen = totals[..., 0], totals[..., 1]
    guess, correct = totals[..., 2:2 + BLEU_N], totals[..., 2 + BLEU_N:]
    precisions = (correct + BLEU_TINY) / (guess + BLEU_SMALL)
    bleu = np.cumprod(precisions, axis=-1) ** (1 / np.arange(1, BLEU_N + 1))
    ratio = (testlen + BLEU_TINY) / (reflen + BLEU_SMALL)
    brevity = np.exp(1 - 1 / np.minimum(ratio, 1.0))  # exp(0) = 1 when the output is not shorter
    return bleu * brevity[..., None]


def bleu_statistics(refs: dict[str, list[str]], preds: dict[str, list[str]]) -> np.ndarray:
    """Per-image BLEU statistics (images, 2 + 2n) from pycocoevalcap's own n-gram counting."""
    rows = []
    for key in refs:
        stats = cook_test(preds[key][0], cook_refs(refs[key], n=BLEU_N), eff="closest", n=BLEU_N)
        rows.append([stats["testlen"], stats["reflen"], *stats["guess"], *stats["correct"]])
    return np.array(rows, np.float64)


def bootstrap_intervals(bleu_stats: np.ndarray, cider_per_image: np.ndarray, resamples: int = 1000,
                        seed: int = 0) -> dict:
    """95% percentile intervals of corpus BLEU-4 and CIDEr-D over images resampled with replacement.

    CIDEr-D keeps the document frequencies of the full split: only the images are resampled.
    """
    n = len(cider_per_image)
    # how often each image is drawn in each resample; weights @ stats sums the resampled images
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples)
    bleu_4 = corpus_bleu(weights @ bleu_stats)[:, BLEU_N - 1]
    cider = weights @ cider_per_image / n
    out = {}
    for name, values in (("bleu_4", bleu_4), ("cider", cider)):
        low, high = np.percentile(values, [2.5, 97.5])
        out[f"{name}_ci95_low"], out[f"{name}_ci95_high"] = float(low), float(high)
    return out


def meteor_score(refs: dict[str, list[str]], preds: dict[str, list[str]]) -> float:
    meteor = Meteor()  # starts the METEOR jar (java -Xmx2G) and keeps it running
    try:
        return float(meteor.compute_score(refs, preds)[0])
    finally:
        del meteor  # its __del__ stops the Java process now rather than at interpreter exit


def diversity(predictions: dict[str, str]) -> dict:
    captions = list(predictions.values())
    return {"distinct_captions": len(set(captions)),
            "vocabulary_used": len({word for caption in captions for word in caption.split()})}


def fluency(predictions: dict[str, str]) -> dict:
    """Counts of disfluent captions: empty, a word twice in a row ("rafting rafting"), ending on a
    function word, and the share that repeat a two-word phrase ("a man and a man")."""
    words = [caption.split() for caption in predictions.values()]

    def repeats_phrase(w):
        bigrams = list(zip(w, w[1:]))
        return len(set(bigrams)) < len(bigrams)

    return {"empty_captions": sum(not w for w in words),
            "repeated_word_captions": sum(any(a == b for a, b in zip(w, w[1:])) for w in words),
            "function_word_endings": sum(bool(w) and w[-1] in FUNCTION_WORDS for w in words),
            "repeated_phrase_share": round(sum(map(repeats_phrase, words)) / max(len(words), 1), 4)}


def _score_inputs(references: dict[str, list[str]], predictions: dict[str, str], use_java: bool | None):
    """(tokenized references, tokenized predictions, tokenizer name), PTB when Java can run it."""
    if set(references) != set(predictions):
        raise ValueError("references and predictions must cover the same images")
    use_java = java_available() if use_java is None else use_java
    # The PTB tokenizer writes its input to a temporary file beside its jar in site-packages.
    ptb = use_java and os.access(os.path.dirname(ptbtokenizer.__file__), os.W_OK)
    if use_java and not ptb:
        log.warning("pycocoevalcap's folder is read-only, so the PTB tokenizer cannot run; "
                    "using the Python tokenisation")
    return (tokenize(references, ptb), tokenize({k: [v] for k, v in predictions.items()}, ptb),
            "ptb (java)" if ptb else "python")


def paired_bootstrap(references: dict[str, list[str]], baseline: dict[str, str], candidate: dict[str, str],
                     resamples: int = 1000, seed: int = 0, use_java: bool | None = None) -> dict:
    """Candidate minus baseline, corpus BLEU-4 and CIDEr-D, with 95% intervals from resampling the
    images: each resample draws the same images for both, so what the two share cancels out."""
    keys = sorted(references)
    refs, base, _ = _score_inputs(references, baseline, use_java)
    _, cand, tokenizer = _score_inputs(references, candidate, use_java)
    refs, base, cand = ({k: d[k] for k in keys} for d in (refs, base, cand))
    n = len(keys)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples)
    full = np.ones((1, n))  # the whole split once: the point estimate
    out = {"images": n, "resamples": resamples, "tokenizer": tokenizer}
    per_image = {}
    for name, preds in (("baseline", base), ("candidate", cand)):
        per_image[name] = (bleu_statistics(refs, preds), np.asarray(Cider().compute_score(refs, preds)[1]))
    for metric in ("bleu_4", "cider"):
        def score(w, name):
            bleu_stats, cider = per_image[name]
            return corpus_bleu(w @ bleu_stats)[:, BLEU_N - 1] if metric == "bleu_4" else w @ cider / n
        difference = score(weights, "candidate") - score(weights, "baseline")
        low, high = np.percentile(difference, [2.5, 97.5])
        out.update({f"{metric}_baseline": float(score(full, "baseline")[0]),
                    f"{metric}_candidate": float(score(full, "candidate")[0]),
                    f"{metric}_difference": float(score(full, "candidate")[0] - score(full, "baseline")[0]),
                    f"{metric}_difference_ci95_low": float(low), f"{metric}_difference_ci95_high": float(high)})
    out["identical_captions"] = round(float(np.mean([baseline[k] == candidate[k] for k in keys])), 4)
    return out


def caption_metrics(references: dict[str, list[str]], predictions: dict[str, str],
                    use_java: bool | None = None, resamples: int = 1000, seed: int = 0) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and bootstrap intervals, one caption per image."""
    scores = {}
    refs, preds, tokenizer = _score_inputs(references, predictions, use_java)
    use_java = java_available() if use_java is None else use_java

    bleu, _ = Bleu(BLEU_N).compute_score(refs, preds, verbose=0)
    scores.update({f"bleu_{n}": float(b) for n, b in enumerate(bleu, 1)})
    if use_java:
        scores["meteor"] = meteor_score(refs, preds)
    else:
        scores["meteor"] = None
        scores["meteor_skipped"] = ("java not found on PATH (pycocoevalcap's METEOR is a Java program)"
                                    if not java_available() else "Java turned off (use_java=False)")
    scores["rouge_l"] = float(Rouge().compute_score(refs, preds)[0])
    cider, cider_per_image = Cider().compute_score(refs, preds)
    scores["cider"] = float(cider)
    scores.update(bootstrap_intervals(bleu_statistics(refs, preds), np.asarray(cider_per_image), resamples, seed))
    scores["tokenizer"] = tokenizer
    scores.update(diversity(predictions))
    scores.update(fluency(predictions))
    return scores

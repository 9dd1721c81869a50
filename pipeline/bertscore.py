"""BERTScore (the bert-score package) of one caption per image, raw and baseline-rescaled.

Against several references bert-score scores the caption with each and keeps the best (the
maximum of P, R and F1 over the references), as the BERTScore paper does for COCO.

Raw scores sit high for any two English sentences, so a rescaled F1, (F1 - b) / (1 - b), is
reported too. b is bert-score's published baseline when it ships one for the model (e.g.
roberta-large); for any other model, such as a local folder, b is the mean F1 of seeded random
pairs of references of different images in the split.
"""
import random
from pathlib import Path

from .vocab import clean_caption

DEFAULT_MODEL = "roberta-large"
BASELINE_PAIRS = 1000


def rescale(score: float, baseline: float) -> float:
    """bert-score's rescaling: the baseline maps to 0 and a perfect score stays 1."""
    return (score - baseline) / (1 - baseline)


def unrelated_pairs(references: dict[str, list[str]], n_pairs: int, seed: int) -> tuple[list[str], list[str]]:
    """`n_pairs` (reference of one image, reference of another image), drawn with `seed`."""
    names = list(references)
    if len(names) < 2:
        raise ValueError("a BERTScore baseline from references needs at least two images")
    rng = random.Random(seed)
    firsts, seconds = [], []
    for _ in range(n_pairs):
        a, b = rng.sample(names, 2)
        firsts.append(rng.choice(references[a]))
        seconds.append(rng.choice(references[b]))
    return firsts, seconds


def load_scorer(model: str = DEFAULT_MODEL, num_layers: int | None = None):
    """bert-score's scorer with its model loaded.

    `model` is a Hugging Face model name or a local model folder; `num_layers` is the layer whose
    embeddings are compared (bert-score knows a tuned one for the models it lists). Loading is
    what fails without torch or the Hub, so evaluate.py does it before any captioning.
    """
    from bert_score import BERTScorer  # imports torch and transformers: only when asked for

    return BERTScorer(model_type=model, num_layers=num_layers, lang="en")


def bertscore(scorer, references: dict[str, list[str]], predictions: dict[str, str], model_name: str,
              seed: int = 0, batch_size: int = 256) -> dict:
    """Mean BERTScore P/R/F1 over the images, the rescaled F1 and how its baseline was found.

    `model_name` is how the report names the scorer's model (never a local path: reports get published).
    """
    model = scorer.model_type
    names = list(predictions)
    candidates = [predictions[name] for name in names]
    # references in the captions' own form (lowercase words, no punctuation), so that formatting
    # the model never produces does not count against it
    refs = {name: [" ".join(clean_caption(r)) for r in references[name]] for name in names}
    published = not Path(model).exists() and Path(scorer.baseline_path).is_file()
    pair_cands, pair_refs = ([], []) if published else unrelated_pairs(refs, BASELINE_PAIRS, seed)
    # One call: the pairs hold only reference sentences, which bert-score then embeds once.
    # batch_size goes to score(), which ignores the scorer's; 256 runs ~1.8x faster than its 64 on CPU.
    precision, recall, f1 = scorer.score(candidates + pair_cands, [refs[n] for n in names] + [[r] for r in pair_refs],
                                         batch_size=batch_size)
    n = len(candidates)
    if published:
        baseline = float(scorer.baseline_vals[2])
        how = f"bert-score's published baseline for {model_name} layer {scorer.num_layers}"
    else:
        baseline = float(f1[n:].mean())
        how = f"mean F1 of {BASELINE_PAIRS} random pairs of references of different images (seed {seed})"
    f1_mean = float(f1[:n].mean())
    return {"bertscore_precision": float(precision[:n].mean()), "bertscore_recall": float(recall[:n].mean()),
            # a baseline of 1 (every image's references the same words) leaves nothing to rescale against
            "bertscore_f1": f1_mean, "bertscore_f1_rescaled": rescale(f1_mean, baseline) if baseline < 1 else None,
            "bertscore_baseline_f1": baseline, "bertscore_baseline": how, "bertscore_model": model_name,
            "bertscore_layers": scorer.num_layers,
            "bertscore_references": "best-matching reference per image (max over its references)"}

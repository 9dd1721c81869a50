"""The recipe that made weights/, as one command: for each seed a cross-entropy decoder trained on
the served (exported, bfloat16) encoder's features, then fine-tuned by self-critical training;
then the fine-tuned decoders averaged into one ensemble folder (see README.md, "Train").

  python recipe.py --data ../shared/flickr8k --out runs/recipe    # the model folder: runs/recipe/ensemble

Three seeds took about 2 hours on 2 CPU cores. Each stage writes its own folder under --out
(xe_seedN, scst_seedN, ensemble), so a killed run, started again, resumes inside the stage it was
in and skips the finished ones (a stage's config.json is the last file it writes). Options not
listed below (--format, --images, --skip-missing, --split-ratio, --backbone-weights, --cache-dir,
--limit-images, ...) go to both train.py and scst.py (--scst-epochs, not --epochs, limits scst.py).
"""
import argparse
import logging
from pathlib import Path

from pipeline.artifact import CONFIG_FILE
from pipeline.cli import run_main

log = logging.getLogger("recipe")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder or file, as for train.py")
    p.add_argument("--out", type=Path, default=Path("runs/recipe"), help="folder for every stage's model folder")
    p.add_argument("--seeds", type=int, default=3, help="decoders in the ensemble, one per seed from 0 (default 3)")
    p.add_argument("--scst-epochs", type=int, default=4,
                   help="most self-critical epochs per decoder (default 4; on Flickr8k the first or second was "
                        "the best, and early stopping ends after 2 without a better dev CIDEr-D)")
    args, stage_options = p.parse_known_args(argv)
    if args.seeds < 2:
        p.error("--seeds must be at least 2: an ensemble needs two decoders")
    return args, stage_options


def finished(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def main(argv=None):
    args, stage_options = parse_args(argv)
    with run_main():
        run_stages(args, stage_options)


def run_stages(args, stage_options: list[str]) -> None:
    import ensemble
    import scst
    import train

    data = ["--data", args.data, *stage_options]
    members = []
    for seed in range(args.seeds):
        cross_entropy, self_critical = args.out / f"xe_seed{seed}", args.out / f"scst_seed{seed}"
        if finished(cross_entropy):
            log.info("seed %d: %s is finished, skipping cross-entropy training", seed, cross_entropy)
        else:
            train.main([*data, "--out", str(cross_entropy), "--seed", str(seed), "--features-from", "exported",
                        "--precision", "bf16"])
        if finished(self_critical):
            log.info("seed %d: %s is finished, skipping self-critical training", seed, self_critical)
        else:
            scst.main([*data, "--model", str(cross_entropy), "--out", str(self_critical),
                       "--epochs", str(args.scst_epochs), "--patience", "2"])
        members.append(str(self_critical))
    ensemble.main([*members, "--out", str(args.out / "ensemble")])


if __name__ == "__main__":
    main()

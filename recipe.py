"""The recipe that makes weights/, as one command: seed 0's cross-entropy decoder trained together
with Xception's exit flow (train.py --tune-exit-flow), whose tuned encoder is exported (bfloat16)
and served; each further seed's decoder trained on that exported encoder's features; each then
fine-tuned by self-critical training; then the fine-tuned decoders averaged into one ensemble
folder (see README.md, "Train"). The members share the one tuned encoder, so the app runs it once.

  python recipe.py --data ../shared/flickr8k --out runs/recipe    # the model folder: runs/recipe/ensemble

Each stage writes its own folder under --out
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
    p.add_argument("--scst-epochs", type=int, default=2,
                   help="most self-critical epochs per decoder (default 2: on Flickr8k every decoder's best was "
                        "its first or second, and on the tuned encoder each second fell, by 0.011 to 0.035)")
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
    members, encoder_folder = [], args.out / "xe_seed0"
    for seed in range(args.seeds):
        cross_entropy, self_critical = args.out / f"xe_seed{seed}", args.out / f"scst_seed{seed}"
        if finished(cross_entropy):
            log.info("seed %d: %s is finished, skipping cross-entropy training", seed, cross_entropy)
        else:
            # measured on Flickr8k dev (docs/training.md): the tuned exit flow's best epoch was the 6th of 8,
            # both rates halved from the 5th on
            encoder = (["--tune-exit-flow", "--epochs", "8", "--patience", "2", "--halve-after", "4",
                        "--precision", "bf16"] if seed == 0 else
                       ["--encoder-from", str(encoder_folder), "--features-from", "exported"])
            train.main(["--data", args.data, *encoder, *stage_options, "--out", str(cross_entropy), "--seed",
                        str(seed)])
        if finished(self_critical):
            log.info("seed %d: %s is finished, skipping self-critical training", seed, self_critical)
        else:
            scst.main([*data, "--model", str(cross_entropy), "--out", str(self_critical),
                       "--epochs", str(args.scst_epochs), "--patience", "2"])
        members.append(str(self_critical))
    ensemble.main([*members, "--out", str(args.out / "ensemble")])


if __name__ == "__main__":
    main()

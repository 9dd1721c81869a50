"""Caption many photos into one file: a record per photo, in JSON Lines or CSV.

  python caption.py photos/ more/*.jpg @list.txt --out captions.jsonl
  python caption.py photos/ --out captions.csv --n-best 3
  python caption.py photos/ --out captions.jsonl --engine ray     # a local Ray, or $RAY_ADDRESS's cluster

PHOTOS are files, folders (searched recursively for image files; hidden ones skipped), glob
patterns (quote them; ** crosses folders) or @LIST: a text file with one such entry a line (blank
lines and # comments skipped; relative entries are relative to the list's folder). A photo reached
twice (listed twice, through a link, or by a folder and by name) is captioned once. An argument
that names nothing stops the run before it starts.

Each record holds the photo's absolute path, its caption, its `familiarity` (0-1: the share of
dev photos at least as far from the training photos; None for a model without the calibration)
and `unfamiliar`, and `error`: why it has no caption (not an image, truncated, unreadable, ...),
else empty; the run goes on past such photos. --n-best N adds
the N best captions with the probability the model gives each (in a CSV, a JSON array in its cell).
The format follows the name of --out: .jsonl or .csv.

Resuming: records are appended and flushed batch by batch. Run the same command again after a
crash or a kill and it skips the photos already in --out (a last line cut off by the kill is
dropped and the file rewritten cleanly), so in the end each photo is there exactly once. Photos
recorded with an error count as done: delete their lines to try them again. Resuming with other
--n-best than the file was written with is refused.

The model is the app's (see app.py): --model names a local folder or a Hub repo.
"""
import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.batch import PhotoListError, caption_files, caption_record, find_photos
from pipeline.cli import add_beam_argument, add_engine_arguments, add_model_arguments, run_main
from pipeline.model_source import ModelError, load_captioner, resolve_model
from pipeline.records import RecordFile, RecordFileError, format_of
from pipeline.ray_engine import ClusterError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+", metavar="PHOTOS", help="files, folders, glob patterns or @LIST files")
    p.add_argument("--out", type=Path, required=True, help="output file, .jsonl or .csv; resumed when it exists")
    add_beam_argument(p)
    p.add_argument("--n-best", type=int, default=0, metavar="N",
                   help="also record the N best captions with their probabilities (N <= beam size)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder pass (default 32)")
    add_engine_arguments(p, "the captioning")
    add_model_arguments(p)
    args = p.parse_args(argv)
    if not 0 <= args.n_best <= args.beam_size:
        p.error("--n-best must be between 0 and --beam-size")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    with run_main(PhotoListError, RecordFileError, ModelError, ClusterError):
        format_of(args.out)
        photos = find_photos(args.photos)
        location = resolve_model(args.model, args.revision)
        fields = list(caption_record("", None, args.n_best))
        with RecordFile(args.out, fields) as records:
            todo = [path for path in photos if not records.is_done(path)]
            print(f"{len(photos)} photos, {len(photos) - len(todo)} already in {args.out}", file=sys.stderr)
            with tqdm(total=len(photos), initial=len(photos) - len(todo), unit="image", smoothing=0.1) as progress:
                def write(batch):
                    records.write(batch)
                    progress.update(len(batch))

                if todo and args.engine == "ray":
                    from pipeline.ray_engine import caption_with_ray
                    caption_with_ray(location, args.encoder, todo, write, batch_size=args.batch_size,
                                     beam_size=args.beam_size, n_best=args.n_best, actors=args.actors)
                elif todo:
                    captioner = load_captioner(location.folder, args.encoder)
                    caption_files(captioner, todo, write, batch_size=args.batch_size, beam_size=args.beam_size,
                                  n_best=args.n_best)


if __name__ == "__main__":
    main()

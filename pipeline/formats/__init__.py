"""The dataset formats `--data` may be in, detected from what the path holds, and the shared command-line arguments.

To add a format: a module here with a DatasetFormat (its detect and load), listed in FORMATS.
"""
import argparse
import logging
from pathlib import Path

from .base import CaptionDataset, DatasetError, DatasetFormat, LoadOptions, parse_split_ratio
from . import coco, flickr8k, hf_datasets, imagefolder, karpathy

log = logging.getLogger(__name__)

# in the order detection tries them: the first that recognises the path reads it
FORMATS: dict[str, DatasetFormat] = {f.name: f for f in (
    flickr8k.ORIGINAL, flickr8k.KAGGLE, karpathy.FORMAT, coco.FORMAT, imagefolder.FORMAT, hf_datasets.FORMAT)}
OPTION_FLAGS = {"images": "--images", "split_ratio": "--split-ratio", "image_column": "--image-column",
                "caption_column": "--caption-column"}


def formats_help() -> str:
    return "\n".join(f"  {f.name}: {f.shape}" for f in FORMATS.values())


def detect_format(path: Path) -> DatasetFormat:
    for candidate in FORMATS.values():
        if candidate.detect(path):
            return candidate
    raise DatasetError(f"{path} is in none of the dataset formats this project reads:\n{formats_help()}\n"
                       "(--format NAME reads it as that one and says what is wrong)")


def load_dataset(path: str | Path, format_name: str | None = None, images: str | Path | None = None,
                 split_ratio: tuple[float, float, float] | None = None, skip_missing: bool = False,
                 image_column: str | None = None, caption_column: str | None = None,
                 cache_dir: str | Path | None = None) -> CaptionDataset:
    """Read the dataset at `path` (a folder, a file, or hf://OWNER/NAME[@REVISION]) in the format
    named, else in the one it is detected to be in."""
    hub_name = hf_datasets.is_hub_name(path)  # kept as text: a Path would fold its "//"
    path = str(path) if hub_name else Path(path).expanduser()
    if not hub_name and not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    if format_name is not None and format_name not in FORMATS:
        raise DatasetError(f"unknown dataset format {format_name!r}; the formats are {', '.join(FORMATS)}")
    dataset_format = FORMATS[format_name] if format_name else hf_datasets.FORMAT if hub_name else detect_format(path)
    options = LoadOptions(Path(images).expanduser() if images else None, split_ratio, skip_missing, image_column,
                          caption_column, Path(cache_dir) if cache_dir else None)
    for option, flag in OPTION_FLAGS.items():
        if getattr(options, option) and option not in dataset_format.accepts:
            raise DatasetError(f"{flag} does not apply to the {dataset_format.name} format ({dataset_format.shape})")
    if options.images and not options.images.is_dir():
        raise DatasetError(f"image folder not found: {options.images}")
    log.info("reading %s as %s", path, dataset_format.name)
    dataset = dataset_format.load(path, options)
    dataset.format, dataset.source = dataset_format.name, path
    return dataset


def split_ratio_argument(text: str) -> tuple[float, float, float]:
    try:
        return parse_split_ratio(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_data_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--data and the options of reading it, with the formats listed in --help (train.py, evaluate.py, bench.py)."""
    group = parser.add_argument_group("data", f"--data is detected to be in one of these formats:\n{formats_help()}")
    group.add_argument("--data", required=default is None, default=default, metavar="PATH",
                       help="dataset folder or file" + (f" (default: {default})" if default else ""))
    group.add_argument("--format", choices=list(FORMATS), help="read --data in this format instead of detecting it")
    group.add_argument("--images", metavar="DIR", help="image root for the formats whose files name images "
                       "relative to one (karpathy, coco); default: the annotation file's folder")
    group.add_argument("--skip-missing", action="store_true", help="go on without the listed images that are not "
                       "on disk (by default they stop the run; the Flickr8k layouts always skip them)")
    group.add_argument("--split-ratio", type=split_ratio_argument, metavar="TRAIN,DEV,TEST",
                       help="split data that has no splits of its own, deterministically (default 0.8,0.1,0.1; "
                            "Kaggle's Flickr8k: 6000/1000/1000 images)")
    group.add_argument("--image-column", metavar="NAME", help="hf-datasets: the column of the images (default: the "
                       "one of the Image type)")
    group.add_argument("--caption-column", metavar="NAME", help="hf-datasets: the column of the captions, a string "
                       f"or a list of strings per row (default: one of {', '.join(hf_datasets.CAPTION_COLUMNS)})")


def dataset_from_args(args: argparse.Namespace) -> CaptionDataset:
    return load_dataset(args.data, args.format, args.images, args.split_ratio, args.skip_missing, args.image_column,
                        args.caption_column, getattr(args, "cache_dir", None))

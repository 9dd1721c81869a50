"""Captioned image datasets, whatever their format: the dataset type and what the format readers share.

The readers themselves are in pipeline/formats/, one module per format, and `pipeline.formats`
keeps the registry that `--data` is detected against.
"""
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
SPLIT_SEED = 8091
DEFAULT_SPLIT_RATIO = (0.8, 0.1, 0.1)
SHOWN_MISSING = 5  # missing images named in a message; the rest are counted


class DatasetError(Exception):
    """The dataset folder or one of its files is missing, empty or malformed."""


@dataclass
class CaptionDataset:
    """Images with their captions, split into train, dev and test.

    An image's name is its path relative to `image_dir`, so one root serves datasets whose images
    lie in several folders: `val2014/COCO_val2014_000000000042.jpg` under a COCO root, a plain file
    name under Flickr8k's `Flicker8k_Dataset/`.
    """
    image_dir: Path
    captions: dict[str, list[str]]  # image name -> raw captions
    splits: dict[str, list[str]] = field(default_factory=dict)  # split -> image names
    format: str = ""  # the registry's name for the format it was read from
    source: Path | None = None  # what --data named

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise DatasetError(f"{self.source or self.image_dir} has no {name!r} split; it has {sorted(self.splits)}")
        return self.splits[name]

    def image_path(self, name: str) -> Path:
        return self.image_dir / name


@dataclass(frozen=True)
class LoadOptions:
    """What the command line adds to the dataset's own files."""
    images: Path | None = None  # image root, for formats whose files name images relative to one
    split_ratio: tuple[float, float, float] | None = None  # train, dev, test; for data without splits
    skip_missing: bool = False  # go on without listed images that are not on disk
    image_column: str | None = None  # for formats of columns: the images' and the captions' (else found)
    caption_column: str | None = None
    cache_dir: Path | None = None  # where formats that must write their images out put them (default: the feature cache's)


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format: how to recognise it and how to read it."""
    name: str
    shape: str  # what --data points at, for --help and errors
    detect: Callable[[Path], bool]
    load: Callable[[Path, LoadOptions], CaptionDataset]
    accepts: frozenset[str] = frozenset()  # the LoadOptions fields besides skip_missing that it uses


def read_lines(path: Path) -> list[str]:
    """The file's non-blank lines, stripped."""
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    # utf-8-sig drops a BOM; splitlines() takes CRLF as well as LF
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetError(f"empty file: {path}")
    return lines


def read_json(path: Path):
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error})") from None


def json_head(path: Path, size: int = 1 << 16) -> str:
    """The start of a .json file, for detection: reading a whole 150 MB annotation file twice is slow."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(size)


def caption_text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: expected a caption (non-empty text), got {value!r}")
    return value.strip()


def drop_missing_images(captions: dict[str, list[str]], image_dir: Path, source: Path,
                        skip_missing: bool) -> dict[str, list[str]]:
    """`captions` without the images not on disk: an error naming them, or with `skip_missing` a warning."""
    missing = [name for name in captions if not (image_dir / name).is_file()]
    if not missing:
        return captions
    if len(missing) == len(captions):
        raise DatasetError(f"none of the images listed in {source} exist in {image_dir} ({len(captions)} listed, "
                           f"the first {missing[0]}); is the image folder right?")
    shown = ", ".join(missing[:SHOWN_MISSING]) + (" ..." if len(missing) > SHOWN_MISSING else "")
    message = f"{len(missing)} of {len(captions)} images listed in {source} are not in {image_dir}: {shown}"
    if not skip_missing:
        raise DatasetError(f"{message}; pass --skip-missing to go on without them")
    log.warning("%s; skipping them", message)
    missing = set(missing)
    return {name: caps for name, caps in captions.items() if name not in missing}


def splits_of(split_of: dict[str, str], captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Split -> names, in the file's order, of the images that have captions (and files)."""
    splits = {split: [] for split in SPLITS if split in split_of.values()}
    for name, split in split_of.items():
        if name in captions:
            splits[split].append(name)
    return splits


def split_by_ratio(names, ratio: tuple[float, float, float] | None, source: Path) -> dict[str, list[str]]:
    """A deterministic, seeded split of data that comes without one (DEFAULT_SPLIT_RATIO unless given)."""
    ratio = ratio or DEFAULT_SPLIT_RATIO
    names = sorted(names)
    random.Random(SPLIT_SEED).shuffle(names)
    total = sum(ratio)
    # at least one image in each split asked for, so a tiny dataset still has a dev split to select on
    n_dev, n_test = (max(1, round(len(names) * part / total)) if part else 0 for part in ratio[1:])
    if n_dev + n_test >= len(names):
        raise DatasetError(f"{source}: {len(names)} images are too few to split {ratio} with a train split left")
    log.warning("%s has no splits: using a deterministic split (seed %d, ratio %s) of %d train / %d dev / %d test "
                "images", source, SPLIT_SEED, ",".join(f"{r:g}" for r in ratio), len(names) - n_dev - n_test,
                n_dev, n_test)
    return {"train": names[n_dev + n_test:], "dev": names[n_test:n_test + n_dev], "test": names[:n_test]}


def refuse_split_ratio(options: LoadOptions, source: Path) -> None:
    if options.split_ratio:
        raise DatasetError(f"{source} has its own train/dev/test splits: --split-ratio applies only to data without")


def parse_split_ratio(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1): train, dev, test, in any unit (they are normalised)."""
    try:
        ratio = tuple(float(part) for part in text.split(","))
    except ValueError:
        ratio = ()
    if len(ratio) != 3 or min(ratio) < 0 or ratio[0] <= 0:
        raise ValueError(f"expected three non-negative numbers TRAIN,DEV,TEST with TRAIN > 0, got {text!r}")
    return ratio

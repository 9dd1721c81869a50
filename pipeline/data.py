"""Flickr8k loading: the original layout (token file + split files) and Kaggle's (captions.txt)."""
import csv
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ORIGINAL_CAPTIONS = "Flickr8k_text/Flickr8k.token.txt"
ORIGINAL_SPLITS = {s: f"Flickr8k_text/Flickr_8k.{s}Images.txt" for s in ("train", "dev", "test")}
ORIGINAL_IMAGES = "Flicker8k_Dataset"
KAGGLE_CAPTIONS = "captions.txt"
KAGGLE_IMAGES = "Images"
KAGGLE_SPLIT_SIZES = {"test": 1000, "dev": 1000}  # the rest is train, as in the original 6000/1000/1000
SPLIT_SEED = 8091


class DatasetError(Exception):
    """The dataset folder or one of its files is missing, empty or malformed."""


@dataclass
class Flickr8k:
    image_dir: Path
    captions: dict[str, list[str]]  # image file name -> raw captions
    splits: dict[str, list[str]] = field(default_factory=dict)  # split -> image names

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise DatasetError(f"unknown split {name!r}; this dataset has {sorted(self.splits)}")
        return self.splits[name]

    def image_path(self, name: str) -> Path:
        return self.image_dir / name


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    # utf-8-sig drops a BOM; splitlines() takes CRLF as well as LF
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetError(f"empty file: {path}")
    return lines


def _keep_existing(captions: dict[str, list[str]], image_dir: Path, source: Path) -> dict[str, list[str]]:
    """Drop entries whose image is not on disk (the original token file lists a bogus `.jpg.1`)."""
    missing = [name for name in captions if not (image_dir / name).is_file()]
    if missing:
        if len(missing) == len(captions):
            raise DatasetError(f"none of the images listed in {source} exist in {image_dir}")
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        log.warning("skipping %d captioned image(s) not found in %s: %s", len(missing), image_dir, shown)
    return {name: caps for name, caps in captions.items() if name not in missing}


def load_original(root: Path) -> Flickr8k:
    token_file = root / ORIGINAL_CAPTIONS
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(_read_lines(token_file), 1):
        key, sep, caption = line.partition("\t")
        if not sep or "#" not in key:
            raise DatasetError(f"{token_file}:{number}: expected 'IMAGE.jpg#N<TAB>caption', got {line[:60]!r}")
        captions.setdefault(key.rsplit("#", 1)[0].strip(), []).append(caption.strip())
    image_dir = root / ORIGINAL_IMAGES
    if not image_dir.is_dir():
        raise DatasetError(f"missing image folder: {image_dir}")
    captions = _keep_existing(captions, image_dir, token_file)
    splits = {}
    for split, rel in ORIGINAL_SPLITS.items():
        listed = _read_lines(root / rel)
        unknown = [name for name in listed if name not in captions]
        if unknown:
            log.warning("%s: %d image(s) without captions or files left out", root / rel, len(unknown))
        splits[split] = [name for name in listed if name in captions]
    return Flickr8k(image_dir, captions, splits)


def load_kaggle(root: Path) -> Flickr8k:
    captions_file = root / KAGGLE_CAPTIONS
    rows = list(csv.reader(_read_lines(captions_file)))
    if [c.strip().lower() for c in rows[0]] != ["image", "caption"]:
        raise DatasetError(f"{captions_file}: expected the header 'image,caption', got {rows[0]}")
    captions: dict[str, list[str]] = {}
    for number, row in enumerate(rows[1:], 2):
        if len(row) < 2:
            raise DatasetError(f"{captions_file}:{number}: expected 'image,caption', got {row}")
        # a caption may itself contain commas that the file did not quote
        captions.setdefault(row[0].strip(), []).append(",".join(row[1:]).strip())
    image_dir = root / KAGGLE_IMAGES
    if not image_dir.is_dir():
        raise DatasetError(f"missing image folder: {image_dir}")
    captions = _keep_existing(captions, image_dir, captions_file)
    names = sorted(captions)
    random.Random(SPLIT_SEED).shuffle(names)
    n_test, n_dev = (min(size, len(names) // 8) for size in KAGGLE_SPLIT_SIZES.values())
    log.warning("%s has no split files: using a deterministic split (seed %d) of %d train / %d dev / %d test images",
                root, SPLIT_SEED, len(names) - n_test - n_dev, n_dev, n_test)
    splits = {"test": names[:n_test], "dev": names[n_test:n_test + n_dev], "train": names[n_test + n_dev:]}
    return Flickr8k(image_dir, captions, splits)


def load_flickr8k(root: str | Path) -> Flickr8k:
    """Load either layout from `root`, whichever its files show."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if (root / ORIGINAL_CAPTIONS).exists():
        return load_original(root)
    if (root / KAGGLE_CAPTIONS).exists():
        return load_kaggle(root)
    raise DatasetError(f"{root} holds neither {ORIGINAL_CAPTIONS} (original Flickr8k) "
                       f"nor {KAGGLE_CAPTIONS} (Kaggle Flickr8k)")

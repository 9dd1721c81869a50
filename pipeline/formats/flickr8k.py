"""Flickr8k's two layouts: the original (token file + split files) and Kaggle's (captions.txt).

Both skip captioned images that are not on disk with a warning, --skip-missing or not: the
original token file lists one bogus `2258277193_586949ec62.jpg.1`, and the real dataset has to
load as it comes.
"""
import csv
import logging
import random
from pathlib import Path

from .base import (SPLIT_SEED, CaptionDataset, DatasetError, DatasetFormat, LoadOptions, drop_missing_images,
                    read_lines, split_by_ratio)

log = logging.getLogger(__name__)

ORIGINAL_CAPTIONS = "Flickr8k_text/Flickr8k.token.txt"
ORIGINAL_SPLITS = {s: f"Flickr8k_text/Flickr_8k.{s}Images.txt" for s in ("train", "dev", "test")}
ORIGINAL_IMAGES = "Flicker8k_Dataset"
KAGGLE_CAPTIONS = "captions.txt"
KAGGLE_IMAGES = "Images"
KAGGLE_SPLIT_SIZES = {"test": 1000, "dev": 1000}  # the rest is train, as in the original 6000/1000/1000


def image_folder(root: Path, name: str) -> Path:
    image_dir = root / name
    if not image_dir.is_dir():
        raise DatasetError(f"missing image folder: {image_dir}")
    return image_dir


def load_original(root: Path, options: LoadOptions) -> CaptionDataset:
    token_file = root / ORIGINAL_CAPTIONS
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(read_lines(token_file), 1):
        key, sep, caption = line.partition("\t")
        if not sep or "#" not in key:
            raise DatasetError(f"{token_file}:{number}: expected 'IMAGE.jpg#N<TAB>caption', got {line[:60]!r}")
        captions.setdefault(key.rsplit("#", 1)[0].strip(), []).append(caption.strip())
    image_dir = image_folder(root, ORIGINAL_IMAGES)
    captions = drop_missing_images(captions, image_dir, token_file, skip_missing=True)
    splits = {}
    for split, rel in ORIGINAL_SPLITS.items():
        listed = read_lines(root / rel)
        unknown = [name for name in listed if name not in captions]
        if unknown:
            log.warning("%s: %d image(s) without captions or files left out", root / rel, len(unknown))
        splits[split] = [name for name in listed if name in captions]
    return CaptionDataset(image_dir, captions, splits)


def load_kaggle(root: Path, options: LoadOptions) -> CaptionDataset:
    captions_file = root / KAGGLE_CAPTIONS
    rows = list(csv.reader(read_lines(captions_file)))
    if [c.strip().lower() for c in rows[0]] != ["image", "caption"]:
        raise DatasetError(f"{captions_file}: expected the header 'image,caption', got {rows[0]}")
    captions: dict[str, list[str]] = {}
    for number, row in enumerate(rows[1:], 2):
        if len(row) < 2:
            raise DatasetError(f"{captions_file}:{number}: expected 'image,caption', got {row}")
        # a caption may itself contain commas that the file did not quote
        captions.setdefault(row[0].strip(), []).append(",".join(row[1:]).strip())
    image_dir = image_folder(root, KAGGLE_IMAGES)
    captions = drop_missing_images(captions, image_dir, captions_file, skip_missing=True)
    if options.split_ratio:
        return CaptionDataset(image_dir, captions, split_by_ratio(captions, options.split_ratio, root))
    names = sorted(captions)
    random.Random(SPLIT_SEED).shuffle(names)
    n_test, n_dev = (min(size, len(names) // 8) for size in KAGGLE_SPLIT_SIZES.values())
    log.warning("%s has no split files: using a deterministic split (seed %d) of %d train / %d dev / %d test images",
                root, SPLIT_SEED, len(names) - n_test - n_dev, n_dev, n_test)
    splits = {"test": names[:n_test], "dev": names[n_test:n_test + n_dev], "train": names[n_test + n_dev:]}
    return CaptionDataset(image_dir, captions, splits)


ORIGINAL = DatasetFormat(
    "flickr8k", f"a folder with {ORIGINAL_CAPTIONS}, the Flickr_8k.*Images.txt split files and {ORIGINAL_IMAGES}/",
    detect=lambda path: (path / ORIGINAL_CAPTIONS).is_file(), load=load_original)
KAGGLE = DatasetFormat(
    "flickr8k-kaggle", f"a folder with {KAGGLE_CAPTIONS} (image,caption) and {KAGGLE_IMAGES}/; split 6000/1000/1000 "
    "unless --split-ratio", detect=lambda path: (path / KAGGLE_CAPTIONS).is_file(), load=load_kaggle,
    accepts=frozenset({"split_ratio"}))

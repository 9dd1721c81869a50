"""COCO caption annotations: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}.

Either one annotation file, split by --split-ratio and with its images under --images (default:
the file's folder), or a COCO download's folder, one file per split:
  ROOT/annotations/captions_train2014.json  (images in ROOT/train2014/)
  ROOT/annotations/captions_val2014.json    (images in ROOT/val2014/; the dev split)
  ROOT/annotations/captions_test2014.json   (optional: without it, val's images are halved into dev and test)
"""
import logging
import random
import re
from pathlib import Path

from .base import (SPLIT_SEED, CaptionDataset, DatasetError, DatasetFormat, LoadOptions, caption_text,
                    drop_missing_images, json_head, read_json, refuse_split_ratio, split_by_ratio)

log = logging.getLogger(__name__)

ANNOTATIONS = "annotations"
# captions_<part>.json, the part naming the split and the image folder: train2014, val2017, ...
PART_PATTERN = re.compile(r"captions_((train|val|test)[^/]*)\.json")
SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test"}


def annotation_files(root: Path) -> list[Path]:
    # glob() of a folder that does not exist finds nothing
    return sorted(p for p in (root / ANNOTATIONS).glob("captions_*.json") if PART_PATTERN.fullmatch(p.name))


def detect(path: Path) -> bool:
    if path.is_dir():
        return bool(annotation_files(path))
    return re.search(r'"(file_name|image_id)"\s*:', json_head(path)) is not None


def read_annotations(path: Path, folder: str = "") -> dict[str, list[str]]:
    """Image name (`folder/file_name`) -> captions, for the images that have any."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: expected an object with 'images' and 'annotations' lists (COCO captions)")
    names = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DatasetError(f"{path}: images[{i}]: expected an object with 'id' and 'file_name'")
        names[image["id"]] = f"{folder}/{image['file_name']}" if folder else image["file_name"]
    captions: dict[str, list[str]] = {}
    for i, annotation in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(annotation, dict) or annotation.get("image_id") not in names:
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            raise DatasetError(f"{where}: image_id {image_id!r} is not among the file's images")
        captions.setdefault(names[annotation["image_id"]], []).append(
            caption_text(annotation.get("caption"), f"{where}.caption"))
    uncaptioned = len(names) - len(captions)
    if uncaptioned:
        log.warning("%s: %d image(s) without captions left out", path, uncaptioned)
    return captions


def load_file(path: Path, options: LoadOptions) -> CaptionDataset:
    image_dir = options.images or path.parent
    captions = drop_missing_images(read_annotations(path), image_dir, path, options.skip_missing)
    return CaptionDataset(image_dir, captions, split_by_ratio(captions, options.split_ratio, path))


def load_folder(root: Path, options: LoadOptions) -> CaptionDataset:
    refuse_split_ratio(options, root)
    image_dir = options.images or root
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {}
    for path in annotation_files(root):
        part, split_word = PART_PATTERN.fullmatch(path.name).groups()
        part_captions = drop_missing_images(read_annotations(path, part), image_dir, path, options.skip_missing)
        captions.update(part_captions)
        splits.setdefault(SPLIT_NAMES[split_word], []).extend(part_captions)
    for split, word in (("train", "train"), ("dev", "val")):
        if split not in splits:
            raise DatasetError(f"{root / ANNOTATIONS} has no captions_{word}*.json: the {split} split needs one")
    if "test" not in splits:  # COCO publishes no test captions: hold out half of val, as Karpathy's split does
        names = sorted(splits["dev"])
        random.Random(SPLIT_SEED).shuffle(names)
        splits["test"], splits["dev"] = names[:len(names) // 2], names[len(names) // 2:]
        log.warning("%s has no test captions: half of the val images (seed %d) are the test split, %d dev / %d test",
                    root / ANNOTATIONS, SPLIT_SEED, len(splits["dev"]), len(splits["test"]))
    return CaptionDataset(image_dir, captions, splits)


def load(path: Path, options: LoadOptions) -> CaptionDataset:
    return load_folder(path, options) if path.is_dir() else load_file(path, options)


FORMAT = DatasetFormat(
    "coco", "a COCO captions JSON (split by --split-ratio; images under --images, default its folder), or a folder "
    "with annotations/captions_{train,val[,test]}*.json and the images in train2014/, val2014/, ...",
    detect=detect, load=load, accepts=frozenset({"images", "split_ratio"}))

"""Karpathy's split JSON (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json).

{"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "split": "test",
             "sentences": [{"raw": "A man riding a bike ."}, ...]}, ...]}
`filepath` is optional (only COCO's has it); images are found under --images, else beside the file.
"""
import re
from pathlib import Path

from .base import (CaptionDataset, DatasetError, DatasetFormat, LoadOptions, caption_text, drop_missing_images,
                    json_head, read_json, splits_of)

# restval is the part of COCO's val2014 that Karpathy's split gives to training
SPLIT_NAMES = {"train": "train", "restval": "train", "val": "dev", "test": "test"}


def detect(path: Path) -> bool:
    return re.search(r'"sentences"\s*:', json_head(path)) is not None


def load(path: Path, options: LoadOptions) -> CaptionDataset:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: expected an object with an 'images' list (Karpathy's split JSON)")
    captions: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
            raise DatasetError(f"{where}: expected an object with a 'filename'")
        where = f"{where} ({image['filename']})"
        if image.get("split") not in SPLIT_NAMES:
            raise DatasetError(f"{where}: 'split' is {image.get('split')!r}, expected one of {sorted(SPLIT_NAMES)}")
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DatasetError(f"{where}: expected a non-empty 'sentences' list")
        name = f"{image['filepath']}/{image['filename']}" if image.get("filepath") else image["filename"]
        captions[name] = [caption_text(s.get("raw") if isinstance(s, dict) else None, f"{where}: sentences[{k}].raw")
                          for k, s in enumerate(sentences)]
        split_of[name] = SPLIT_NAMES[image["split"]]
    image_dir = options.images or path.parent
    captions = drop_missing_images(captions, image_dir, path, options.skip_missing)
    return CaptionDataset(image_dir, captions, splits_of(split_of, captions))


FORMAT = DatasetFormat(
    "karpathy", "Karpathy's split JSON (dataset_coco.json, dataset_flickr30k.json, ...); images under --images "
    "(default: the JSON's folder)", detect=detect, load=load, accepts=frozenset({"images"}))

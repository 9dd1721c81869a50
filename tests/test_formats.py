"""Each dataset format: detected, read, trained on with train.py, scored with evaluate.py, and what it
does with malformed files, missing images and split options."""
import json
import logging

import pytest

import evaluate
import train
from pipeline import Captioner
from pipeline.data import DatasetError
from pipeline.formats import FORMATS, detect_format, load_dataset
from conftest import write_image
from dataset_writers import place_images, write_coco, write_flickr8k, write_imagefolder, write_karpathy

SUBJECTS = ["A dog", "Two children", "A man", "A woman", "A bird", "Three girls"]
ACTIONS = ["runs on the grass .", "plays in the sand .", "rides a red bike .", "jumps into the water ."]
NAMES = [f"p{i}.jpg" for i in range(12)]
CAPTIONS = {name: [f"{SUBJECTS[i % 6]} {ACTIONS[(i + k) % 4]}" for k in range(3)] for i, name in enumerate(NAMES)}
SPLITS = {"train": NAMES[:8], "dev": NAMES[8:10], "test": NAMES[10:]}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Small JPEGs that every dataset copies: the same bytes, so their features are computed once (content-keyed)."""
    folder = tmp_path_factory.mktemp("pool")
    return [write_image(folder / f"{i}.jpg", i) for i in range(len(NAMES))]


def with_folder(folder: str, names) -> dict[str, list[str]]:
    return {f"{folder}/{name}": CAPTIONS[name] for name in names}


def build_flickr8k(root, pool):
    return write_flickr8k(root, CAPTIONS, SPLITS, pool), []


def build_karpathy(root, pool):
    """COCO-like: images in two folders named by `filepath`, part of train as restval, --images for the root."""
    captions = {**with_folder("train2014", SPLITS["train"]), **with_folder("val2014", SPLITS["dev"] + SPLITS["test"])}
    split_of = dict(zip(captions, ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2))
    place_images(root / "coco", captions, pool)
    return write_karpathy(root / "dataset_tiny.json", captions, split_of), ["--images", str(root / "coco")]


def build_coco(root, pool):
    """A COCO download's layout: annotations/captions_{train,val}2014.json, images in train2014/ and val2014/."""
    write_coco(root / "annotations" / "captions_train2014.json", {n: CAPTIONS[n] for n in SPLITS["train"]})
    write_coco(root / "annotations" / "captions_val2014.json", {n: CAPTIONS[n] for n in SPLITS["dev"] + SPLITS["test"]})
    place_images(root, {**with_folder("train2014", SPLITS["train"]),
                        **with_folder("val2014", SPLITS["dev"] + SPLITS["test"])}, pool)
    return root, []


def build_imagefolder_jsonl(root, pool):
    """Split folders, one row per caption."""
    for folder, split in (("train", "train"), ("validation", "dev"), ("test", "test")):
        write_imagefolder(root / folder, {n: CAPTIONS[n] for n in SPLITS[split]}, "jsonl")
        place_images(root / folder, SPLITS[split], pool)
    return root, []


def build_imagefolder_csv(root, pool):
    """One metadata.csv at the top with a JSON list of captions per image, split by --split-ratio."""
    write_imagefolder(root, {f"images/{n}": caps for n, caps in CAPTIONS.items()}, "csv", as_lists=True,
                      column="caption")
    place_images(root / "images", NAMES, pool)
    return root, ["--split-ratio", "0.6,0.2,0.2"]


BUILDERS = {"flickr8k": build_flickr8k, "karpathy": build_karpathy, "coco": build_coco,
            "imagefolder-jsonl": build_imagefolder_jsonl, "imagefolder-csv": build_imagefolder_csv}


@pytest.mark.parametrize("kind", BUILDERS)
def test_train_evaluate_and_load_on_each_format(kind, pool, tmp_path, tmp_path_factory, monkeypatch):
    # the metrics' Java tools (PTB tokenizer, METEOR) take seconds to start and are tested in test_metrics.py
    monkeypatch.setattr("pipeline.metrics.java_available", lambda: False)
    data, extra = BUILDERS[kind](tmp_path / "data", pool)
    out, cache = tmp_path / "model", tmp_path_factory.getbasetemp() / "feature-cache"  # one cache for all formats
    common = ["--data", str(data), *extra, "--backbone-weights", "none", "--cache-dir", str(cache)]
    train.main([*common, "--out", str(out), "--epochs", "1", "--min-count", "1", "--batch-size", "8", "--no-export"])
    training = json.loads((out / "config.json").read_text())["training"]
    dataset = load_dataset(data, split_ratio=(0.6, 0.2, 0.2) if "--split-ratio" in extra else None,
                           images=extra[1] if "--images" in extra else None)
    assert training["data"] == {"format": kind.partition("-")[0], "source": data.name}
    assert training["train_images"] == len(dataset.split("train")) >= 6 and training["epochs_run"] == 1

    report = tmp_path / "report.json"
    evaluate.main([*common, "--weights", str(out), "--split", "test", "--no-bertscore", "--bootstrap", "10",
                   "--json", str(report)])
    assert json.loads(report.read_text())["n_images"] == len(dataset.split("test")) >= 2
    images = [line.split(",")[0] for line in report.with_suffix(".csv").read_text().splitlines()[1:]]
    assert images == dataset.split("test")

    captioner = Captioner.from_pretrained(out, backbone_weights="none", encoder="keras")
    assert captioner.caption(dataset.image_path(dataset.split("test")[0])).split()

"""Each dataset format: detected, read, trained on with train.py, scored with evaluate.py, and what it
does with malformed files, missing images and split options."""
import json
import logging
import shutil

import pytest

import evaluate
import train
from pipeline import Captioner
from pipeline.formats.base import SPLIT_SEED, DatasetError
from pipeline.formats import FORMATS, detect_format, load_dataset
from conftest import write_image
from dataset_writers import (KARPATHY_SPLITS, place_images, write_coco, write_flickr8k, write_hf_dataset,
                             write_imagefolder, write_karpathy)

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


def build_hf_disk(root, pool):
    """save_to_disk of a DatasetDict: train, validation, test."""
    return write_hf_dataset(root, CAPTIONS, SPLITS, pool, "disk"), []


def build_hf_parquet(root, pool):
    """Parquet files named by split, as the Hub publishes them (data/train-00000-of-00001.parquet, ...)."""
    return write_hf_dataset(root, CAPTIONS, SPLITS, pool, "parquet"), []


BUILDERS = {"flickr8k": build_flickr8k, "karpathy": build_karpathy, "coco": build_coco,
            "imagefolder-jsonl": build_imagefolder_jsonl, "imagefolder-csv": build_imagefolder_csv,
            "hf-datasets-disk": build_hf_disk, "hf-datasets-parquet": build_hf_parquet}


def format_name(kind: str) -> str:
    """The format a builder writes: its name, less the variant after the last dash."""
    return kind if kind in FORMATS else kind.rpartition("-")[0]


@pytest.mark.slow
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
                           images=extra[1] if "--images" in extra else None, cache_dir=cache)
    assert training["data"] == {"format": format_name(kind), "source": data.name}
    assert training["train_images"] == len(dataset.split("train")) >= 6 and training["epochs_run"] == 1

    report = tmp_path / "report.json"
    evaluate.main([*common, "--model", str(out), "--split", "test", "--no-bertscore", "--bootstrap", "10",
                   "--json", str(report)])
    assert json.loads(report.read_text())["n_images"] == len(dataset.split("test")) >= 2
    images = [line.split(",")[0] for line in report.with_suffix(".csv").read_text().splitlines()[1:]]
    assert images == dataset.split("test")

    captioner = Captioner.from_pretrained(out, backbone_weights="none", encoder="keras")
    assert captioner.caption(dataset.image_path(dataset.split("test")[0])).split()


# --- detection, splits and options, on files alone (the loaders only check that images exist) --------------

def small(n=6) -> dict[str, list[str]]:
    return {name: CAPTIONS[name] for name in NAMES[:n]}


@pytest.mark.parametrize("kind", BUILDERS)
def test_each_format_is_detected(kind, tmp_path):
    data, _ = BUILDERS[kind](tmp_path, None)
    assert detect_format(data).name == format_name(kind)


def test_a_format_nobody_wrote_is_refused_with_the_list_of_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DatasetError, match="none of the dataset formats") as error:
        load_dataset(tmp_path)
    assert all(name in str(error.value) for name in FORMATS)


def test_format_overrides_detection_and_says_what_does_not_fit(tmp_path):
    coco_file = write_coco(tmp_path / "captions.json", small())
    with pytest.raises(DatasetError, match=r"captions.json: images\[0\]: expected an object with a 'filename'"):
        load_dataset(coco_file, format_name="karpathy")


def test_help_lists_every_format(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    listed = capsys.readouterr().out
    assert all(f"  {f.name}: {f.shape.split()[0]}" in listed for f in FORMATS.values())


def test_restval_is_train_and_val_is_dev(tmp_path):
    place_images(tmp_path, small(4))
    split_of = dict(zip(NAMES[:4], ["train", "restval", "val", "test"]))
    data = load_dataset(write_karpathy(tmp_path / "dataset_x.json", small(4), split_of))
    assert data.splits == {"train": NAMES[:2], "dev": [NAMES[2]], "test": [NAMES[3]]}
    assert data.format == "karpathy" and data.captions[NAMES[0]] == CAPTIONS[NAMES[0]]


@pytest.mark.parametrize("kind, as_lists", [("jsonl", False), ("jsonl", True), ("csv", False), ("csv", True)])
def test_imagefolder_reads_several_captions_per_image_as_rows_or_as_a_list(tmp_path, kind, as_lists):
    write_imagefolder(tmp_path / "validation", small(2), kind, as_lists)
    write_imagefolder(tmp_path / "train", {n: CAPTIONS[n] for n in NAMES[2:5]}, kind, as_lists, column="caption")
    place_images(tmp_path / "validation", NAMES[:2])
    place_images(tmp_path / "train", NAMES[2:5])
    data = load_dataset(tmp_path)
    assert data.splits == {"train": [f"train/{n}" for n in NAMES[2:5]], "dev": [f"validation/{n}" for n in NAMES[:2]]}
    assert data.captions["validation/p0.jpg"] == CAPTIONS["p0.jpg"] and len(CAPTIONS["p0.jpg"]) == 3


def test_coco_file_is_split_by_ratio_deterministically_with_images_from_the_images_option(tmp_path):
    place_images(tmp_path / "val2014", NAMES)
    annotations = write_coco(tmp_path / "annotations" / "captions_val2014.json", CAPTIONS)
    first = load_dataset(annotations, images=tmp_path / "val2014", split_ratio=(8, 2, 2))
    second = load_dataset(annotations, images=tmp_path / "val2014", split_ratio=(8, 2, 2))
    assert first.splits == second.splits
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 8, "dev": 2, "test": 2}
    assert sorted(sum(first.splits.values(), [])) == sorted(NAMES)
    assert first.image_path("p3.jpg") == tmp_path / "val2014" / "p3.jpg"
    default = load_dataset(annotations, images=tmp_path / "val2014")  # 0.8, 0.1, 0.1
    assert {k: len(v) for k, v in default.splits.items()} == {"train": 10, "dev": 1, "test": 1}


def test_a_coco_folder_without_test_captions_halves_val_into_dev_and_test(tmp_path):
    data, _ = build_coco(tmp_path, None)
    splits = load_dataset(data).splits
    assert splits["train"] == [f"train2014/{n}" for n in SPLITS["train"]]
    assert sorted(splits["dev"] + splits["test"]) == sorted(f"val2014/{n}" for n in NAMES[8:])
    assert len(splits["dev"]) == len(splits["test"]) == 2


@pytest.mark.parametrize("kind, flag", [("karpathy", "--split-ratio"), ("flickr8k", "--split-ratio"),
                                        ("imagefolder-jsonl", "--split-ratio"), ("imagefolder-jsonl", "--images")])
def test_options_that_do_not_apply_are_refused(kind, flag, tmp_path):
    data, extra = BUILDERS[kind](tmp_path / "data", None)
    option = {"--split-ratio": {"split_ratio": (1, 1, 1)}, "--images": {"images": tmp_path}}[flag]
    with pytest.raises(DatasetError, match=flag):
        load_dataset(data, **option, **({"images": extra[1]} if "--images" in extra else {}))


def test_a_bad_split_ratio_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "x", "--split-ratio", "0.8,0.2"])
    assert "TRAIN,DEV,TEST" in capsys.readouterr().err


# --- malformed files: the error names the file and the line or record ------------------------------------

def karpathy_not_json(tmp_path):
    path = tmp_path / "dataset_x.json"
    path.write_text('{"images": [\n  {"sentences": [}\n]}')
    return path


def edited_json(path, change):
    """`path` with `change` applied to its JSON in place, written back."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def karpathy_missing_sentences(tmp_path):
    path = write_karpathy(tmp_path / "dataset_x.json", small(3), dict.fromkeys(NAMES[:3], "train"))
    return edited_json(path, lambda data: data["images"][1].pop("sentences"))


def coco_unknown_image(tmp_path):
    return edited_json(write_coco(tmp_path / "captions.json", small(3)),
                       lambda data: data["annotations"][4].update(image_id=999))


def jsonl_broken_line(tmp_path):
    write_imagefolder(tmp_path, small(3))
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-1]  # the closing brace
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "metadata.jsonl"


def jsonl_without_file_name(tmp_path):
    write_imagefolder(tmp_path, small(3))
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"text": "A dog ."})
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "metadata.jsonl"


def csv_without_caption(tmp_path):
    write_imagefolder(tmp_path, small(3), "csv")
    lines = (tmp_path / "metadata.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ","
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "metadata.csv"


@pytest.mark.parametrize("breakage, where", [
    (karpathy_not_json, r"dataset_x.json:2:18: not valid JSON"),
    (karpathy_missing_sentences, r"dataset_x.json: images\[1\] \(p1.jpg\): expected a non-empty 'sentences' list"),
    (coco_unknown_image, r"captions.json: annotations\[4\]: image_id 999 is not among the file's images"),
    (jsonl_broken_line, r"metadata.jsonl:3: not valid JSON"),
    (jsonl_without_file_name, r"metadata.jsonl:2: expected a 'file_name', got None"),
    (csv_without_caption, r"metadata.csv:4: text: expected a caption"),
])
def test_a_malformed_file_is_named_with_its_line_or_record(breakage, where, tmp_path):
    path = breakage(tmp_path)
    place_images(tmp_path, NAMES[:3])
    with pytest.raises(DatasetError, match=where):
        load_dataset(path if path.suffix == ".json" else path.parent)


# --- images listed but not on disk -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["karpathy", "coco", "imagefolder-jsonl", "imagefolder-csv"])
def test_missing_images_are_counted_and_named_and_stop_the_run(kind, tmp_path):
    data, extra = BUILDERS[kind](tmp_path / "data", None)
    dataset = load_dataset(data, images=extra[1] if "--images" in extra else None)
    gone = [name for name in dataset.captions if name.endswith(("p1.jpg", "p3.jpg", "p4.jpg"))]
    for name in gone:
        dataset.image_path(name).unlink()
    with pytest.raises(DatasetError, match="--skip-missing") as error:
        load_dataset(data, images=extra[1] if "--images" in extra else None)
    assert "3 of " in str(error.value) and all(name in str(error.value) for name in gone)


def test_only_the_first_missing_images_are_named(tmp_path):
    place_images(tmp_path, NAMES[:2])
    with pytest.raises(DatasetError, match=r"10 of 12 images .*: p2.jpg, p3.jpg, p4.jpg, p5.jpg, p6.jpg \.\.\.;"):
        load_dataset(write_coco(tmp_path / "captions.json", CAPTIONS))


def test_skip_missing_warns_and_goes_on_without_them(tmp_path, caplog):
    place_images(tmp_path, [n for n in NAMES if n != "p9.jpg"])
    path = write_karpathy(tmp_path / "dataset_x.json", CAPTIONS,
                          {name: KARPATHY_SPLITS[split] for split, names in SPLITS.items() for name in names})
    with caplog.at_level(logging.WARNING):
        data = load_dataset(path, skip_missing=True)
    assert "1 of 12 images listed in" in caplog.text and "p9.jpg" in caplog.text
    assert "p9.jpg" not in data.captions and data.splits["dev"] == ["p8.jpg"]


def test_flickr8k_skips_missing_images_without_being_asked(tmp_path, caplog):
    """The original token file lists a bogus `.jpg.1`: the real dataset loads as it comes."""
    root = write_flickr8k(tmp_path, CAPTIONS, SPLITS)
    (root / "Flicker8k_Dataset" / "p0.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        data = load_dataset(root)
    assert "p0.jpg" in caplog.text and data.split("train") == NAMES[1:8]


# --- what the end-to-end runs above leave unchecked (found by mutation testing) ---------------------------

def write_kaggle(root, captions):
    root.mkdir(parents=True, exist_ok=True)
    (root / "captions.txt").write_text("image,caption\n" + "".join(
        f"{name},{caption}\n" for name, caps in captions.items() for caption in caps), encoding="utf-8")
    place_images(root / "Images", [name for name in captions if name != "gone.jpg"])
    return root


def test_kaggle_flickr8k_is_split_by_ratio_when_asked_and_skips_missing_images(tmp_path, caplog):
    root = write_kaggle(tmp_path / "kaggle", {**CAPTIONS, "gone.jpg": ["A cat sits ."]})
    with caplog.at_level(logging.WARNING):
        data = load_dataset(root, split_ratio=(8, 2, 2))
    assert "gone.jpg" in caplog.text and "gone.jpg" not in data.captions  # skipped without --skip-missing
    assert f"{root} has no splits: using a deterministic split (seed {SPLIT_SEED}, ratio 8,2,2) of 8 train / 2 dev / " \
           "2 test images" in [r.getMessage() for r in caplog.records]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 8, "dev": 2, "test": 2}
    assert sorted(sum(data.splits.values(), [])) == sorted(NAMES) and data.captions["p0.jpg"] == CAPTIONS["p0.jpg"]
    assert data.image_path("p3.jpg") == root / "Images" / "p3.jpg"
    assert data.splits == load_dataset(root, split_ratio=(8, 2, 2)).splits
    two = write_kaggle(tmp_path / "two", small(2))
    with pytest.raises(DatasetError, match=f"{two}: 2 images are too few to split"):  # the error names the folder
        load_dataset(two, split_ratio=(8, 1, 1))


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_coco_missing_images_name_the_annotation_file_and_skip_missing_goes_on(layout, tmp_path):
    if layout == "file":
        place_images(tmp_path, NAMES[1:])
        data, annotations = write_coco(tmp_path / "captions.json", CAPTIONS), tmp_path / "captions.json"
    else:
        data, _ = build_coco(tmp_path, None)
        (tmp_path / "train2014" / "p0.jpg").unlink()
        annotations = tmp_path / "annotations" / "captions_train2014.json"
    with pytest.raises(DatasetError, match=f"1 of .* listed in {annotations}"):
        load_dataset(data)
    loaded = load_dataset(data, skip_missing=True)
    assert not any(name.endswith("p0.jpg") for name in loaded.captions)


def test_a_coco_file_too_small_for_the_ratio_is_named(tmp_path):
    place_images(tmp_path, NAMES[:2])
    path = write_coco(tmp_path / "captions.json", small(2))
    with pytest.raises(DatasetError, match=f"{path}: 2 images are too few to split"):
        load_dataset(path, split_ratio=(8, 1, 1))


def test_a_coco_folder_refuses_a_split_ratio_and_names_the_folder(tmp_path):
    data, _ = build_coco(tmp_path, None)
    with pytest.raises(DatasetError, match=f"{tmp_path}.*--split-ratio"):
        load_dataset(data, split_ratio=(1, 1, 1))


@pytest.mark.parametrize("missing, message", [("train", "captions_train\\*.json: the train split needs one"),
                                              ("val", "captions_val\\*.json: the dev split needs one")])
def test_a_coco_folder_needs_train_and_val_captions(missing, message, tmp_path):
    build_coco(tmp_path, None)
    (tmp_path / "annotations" / f"captions_{missing}2014.json").unlink()
    with pytest.raises(DatasetError, match=f"{tmp_path / 'annotations'} has no {message}"):
        load_dataset(tmp_path, format_name="coco")


def test_a_coco_folder_with_test_captions_keeps_val_whole_as_dev(tmp_path, caplog):
    build_coco(tmp_path, None)
    write_coco(tmp_path / "annotations" / "captions_test2014.json", {n: CAPTIONS[n] for n in NAMES[:2]})
    place_images(tmp_path / "test2014", NAMES[:2])
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(tmp_path).splits
    assert splits["dev"] == [f"val2014/{n}" for n in NAMES[8:]] and splits["test"] == ["test2014/p0.jpg", "test2014/p1.jpg"]
    assert "no test captions" not in caplog.text


def test_coco_images_without_captions_are_counted_in_a_warning(tmp_path, caplog):
    path = edited_json(write_coco(tmp_path / "captions.json", small(4)), lambda data: data["images"].extend(
        [{"id": 900, "file_name": "x.jpg"}, {"id": 901, "file_name": "y.jpg"}]))
    place_images(tmp_path, NAMES[:4])
    with caplog.at_level(logging.WARNING):
        loaded = load_dataset(path, split_ratio=(2, 1, 1))
    assert f"{path}: 2 image(s) without captions left out" in [r.getMessage() for r in caplog.records]
    assert "x.jpg" not in loaded.captions


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("annotations"), "expected an object with 'images' and 'annotations' lists"),
    (lambda d: d.update(images={}), "expected an object with 'images' and 'annotations' lists"),
    (lambda d: d["images"][1].pop("id"), r"images\[1\]: expected an object with 'id' and 'file_name'"),
    (lambda d: d["images"][2].pop("file_name"), r"images\[2\]: expected an object with 'id' and 'file_name'"),
    (lambda d: d["annotations"].insert(0, ["not", "an", "object"]), r"annotations\[0\]: image_id None"),
    (lambda d: d["annotations"][3].update(caption=7), r"annotations\[3\].caption"),
])
def test_malformed_coco_records_are_named(change, message, tmp_path):
    path = edited_json(write_coco(tmp_path / "captions.json", small(3)), change)
    place_images(tmp_path, NAMES[:3])
    with pytest.raises(DatasetError, match=f"{path}: {message}"):
        load_dataset(path, format_name="coco")


def test_the_data_arguments_reach_the_loader(tmp_path):
    import argparse

    from pipeline.formats import add_data_arguments, dataset_from_args

    place_images(tmp_path / "val2014", NAMES[1:])
    annotations = write_coco(tmp_path / "annotations" / "captions_val2014.json", CAPTIONS)
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--data", str(annotations), "--format", "coco", "--images", str(tmp_path / "val2014"),
                              "--skip-missing", "--split-ratio", "7,2,2"])
    data = dataset_from_args(args)
    assert data.format == "coco" and "p0.jpg" not in data.captions  # skipped: not on disk
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7, "dev": 2, "test": 2}
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --data is required without a default
    defaulted = argparse.ArgumentParser()
    add_data_arguments(defaulted, default="somewhere")
    assert defaulted.parse_args([]).data == "somewhere" and not defaulted.parse_args([]).skip_missing


def test_the_data_arguments_explain_themselves_in_help(capsys):
    import argparse

    from pipeline.formats import add_data_arguments, formats_help

    parser = argparse.ArgumentParser(formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, default="data/x")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    listed = [f"{f.name}: {f.shape}" for f in FORMATS.values()]
    assert formats_help().splitlines() == [f"  {line}" for line in listed]
    lines = [line.strip() for line in out.splitlines()]
    start = lines.index("--data is detected to be in one of these formats:")
    assert lines[start + 1:start + 1 + len(listed)] == listed
    words = " ".join(out.split())
    for shown in ["--data PATH dataset folder or file (default: data/x)",
                  f"--format {{{','.join(FORMATS)}}} read --data in this format instead of detecting it",
                  "--images DIR image root for the formats whose files name images relative to one (karpathy, "
                  "coco); default: the annotation file's folder",
                  "--skip-missing go on without the listed images that are not on disk (by default they stop the "
                  "run; the Flickr8k layouts always skip them)",
                  "--split-ratio TRAIN,DEV,TEST split data that has no splits of its own, deterministically "
                  "(default 0.8,0.1,0.1; Kaggle's Flickr8k: 6000/1000/1000 images)",
                  "--image-column NAME hf-datasets: the column of the images (default: the one of the Image type)",
                  "--caption-column NAME hf-datasets: the column of the captions, a string or a list of strings per "
                  "row (default: one of text, caption, captions, sentences)"]:
        assert shown in words


def test_every_data_argument_reaches_load_dataset_in_its_place(monkeypatch):
    """dataset_from_args hands each option to load_dataset, the cache folder too (where hf:// datasets go)."""
    import argparse

    from pipeline import formats

    calls = []
    monkeypatch.setattr(formats, "load_dataset", lambda *given: calls.append(given))
    parser = argparse.ArgumentParser()
    formats.add_data_arguments(parser)
    parser.add_argument("--cache-dir")
    formats.dataset_from_args(parser.parse_args(["--data", "d", "--format", "hf-datasets", "--images", "i",
                                                 "--split-ratio", "6,2,2", "--skip-missing", "--image-column", "im",
                                                 "--caption-column", "cap", "--cache-dir", "c"]))
    formats.dataset_from_args(argparse.Namespace(data="d", format=None, images=None, split_ratio=None,
                                                 skip_missing=False, image_column=None, caption_column=None))
    # (an entry point without --cache-dir)
    assert calls == [("d", "hf-datasets", "i", (6.0, 2.0, 2.0), True, "im", "cap", "c"),
                     ("d", None, None, None, False, None, None, None)]


@pytest.mark.parametrize("text, ratio", [("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("8,2,0", (8.0, 2.0, 0.0)),
                                         (" 6 ,1, 1", (6.0, 1.0, 1.0))])
def test_split_ratios_are_read_as_three_numbers(text, ratio):
    from pipeline.formats.base import parse_split_ratio

    assert parse_split_ratio(text) == ratio


@pytest.mark.parametrize("text", ["0.8,0.2", "1,2,3,4", "a,b,c", "", "0,1,1", "1,-1,1", "1,1,-0.5", "-1,1,1"])
def test_a_split_ratio_that_is_not_three_usable_numbers_is_refused(text, capsys):
    from pipeline.formats.base import parse_split_ratio

    message = f"expected three non-negative numbers TRAIN,DEV,TEST with TRAIN > 0, got {text!r}"
    with pytest.raises(ValueError) as error:
        parse_split_ratio(text)
    assert str(error.value) == message
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "x", f"--split-ratio={text}"])
    assert message in capsys.readouterr().err


# --- reading files: encodings, detection's peek, ratio splits (pipeline/formats/base.py) ---------------------------

def test_a_folder_named_like_a_json_file_is_not_read_as_one(tmp_path):
    (tmp_path / "data.json").mkdir()
    with pytest.raises(DatasetError, match="none of the dataset formats"):
        load_dataset(tmp_path / "data.json")


def test_detection_peeks_past_bytes_that_are_not_utf8(tmp_path):
    path = write_coco(tmp_path / "captions.json", small(3))
    path.write_bytes(b'{"info": "\xff\xfe", ' + path.read_bytes()[1:])  # read_json would refuse it: detection must not
    with pytest.raises(DatasetError, match=f"{path}: not UTF-8 text"):
        load_dataset(path)  # detected as COCO, then refused by the reader with its reason


def test_json_with_a_byte_order_mark_loads(tmp_path):
    path = write_coco(tmp_path / "captions.json", small(3))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    place_images(tmp_path, NAMES[:3])
    assert sorted(load_dataset(path, format_name="coco", split_ratio=(1, 1, 1)).captions) == NAMES[:3]


def test_a_missing_file_is_named(tmp_path):
    from pipeline.formats.base import read_json

    with pytest.raises(DatasetError, match=f"missing file: {tmp_path / 'nothing.json'}"):
        read_json(tmp_path / "nothing.json")


def test_a_ratio_split_without_a_test_share_has_no_test_images_and_says_so(tmp_path, caplog):
    place_images(tmp_path, NAMES)
    path = write_coco(tmp_path / "captions.json", CAPTIONS)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(path, split_ratio=(8, 4, 0))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 8, "dev": 4, "test": 0}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} has no splits: using a deterministic split (seed {SPLIT_SEED}, ratio 8,4,0) of 8 train / 4 dev / "
        "0 test images"]


def test_the_format_is_named_in_the_log_and_unknown_formats_and_image_folders_are_refused(tmp_path, caplog):
    place_images(tmp_path, NAMES[:3])
    path = write_coco(tmp_path / "captions.json", small(3))
    with caplog.at_level(logging.INFO, logger="pipeline.formats"):
        load_dataset(path, split_ratio=(1, 1, 1))
    assert f"reading {path} as coco" in [r.getMessage() for r in caplog.records]
    with pytest.raises(DatasetError) as error:
        load_dataset(path, format_name="parquet")
    assert str(error.value) == f"unknown dataset format 'parquet'; the formats are {', '.join(FORMATS)}"
    with pytest.raises(DatasetError) as error:
        load_dataset(path, images=tmp_path / "elsewhere")
    assert str(error.value) == f"image folder not found: {tmp_path / 'elsewhere'}"
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path / "notes.txt")
    assert str(error.value).endswith("\n(--format NAME reads it as that one and says what is wrong)")


def test_format_from_the_arguments_reads_a_file_detection_would_not(tmp_path, capsys):
    import argparse

    from pipeline.formats import add_data_arguments, dataset_from_args

    place_images(tmp_path, NAMES[:3])
    text = tmp_path / "captions.txt"  # COCO JSON under another suffix: only --format says what it is
    text.write_text(write_coco(tmp_path / "captions.json", small(3)).read_text())
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--data", str(text), "--format", "coco", "--split-ratio", "1,1,1"])
    assert dataset_from_args(args).format == "coco"
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    words = " ".join(capsys.readouterr().out.split())
    assert "data: --data is detected" in words and "--data PATH dataset folder or file --format" in words


# --- ImageFolder and Karpathy: each refusal says what and where ------------------------------------------

def test_imagefolder_metadata_in_two_places_is_refused(tmp_path):
    write_imagefolder(tmp_path, small(2))
    write_imagefolder(tmp_path / "train", small(2))
    write_imagefolder(tmp_path / "validation", small(2))
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path)
    assert str(error.value) == f"{tmp_path} has metadata at its top and in train, validation/: keep one"
    write_imagefolder(tmp_path / "test", small(2), "csv")
    write_imagefolder(tmp_path / "test", small(2), "jsonl")
    (tmp_path / "metadata.jsonl").unlink()
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path)
    assert str(error.value) == f"{tmp_path / 'test'} holds both metadata.jsonl and metadata.csv: keep one"


@pytest.mark.parametrize("lines, message", [
    (['{"file_name": "p0.jpg", "text": "A dog .", "caption": "A cat ."}'],
     "{file}:1: expected one caption column of text, caption, captions, got ['text', 'caption']"),
    (['{"file_name": "p0.jpg"}'], "{file}:1: expected one caption column of text, caption, captions, got none"),
    (['{"file_name": "p0.jpg", "captions": []}'], "{file}:1: the caption list is empty"),
    (['["p0.jpg", "A dog ."]'], "{file}:1: expected a JSON object, got list"),
    (["", "  "], "empty file: {file}"),
])
def test_malformed_imagefolder_rows_are_named(lines, message, tmp_path):
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path)
    assert str(error.value) == message.format(file=tmp_path / "metadata.jsonl")


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_imagefolder_reads_a_byte_order_mark_blank_lines_short_rows_and_bracketed_captions(kind, tmp_path):
    place_images(tmp_path, NAMES[:3])
    if kind == "jsonl":
        rows = [json.dumps({"file_name": "p0.jpg", "text": "A dog runs ."}), "",
                json.dumps({"file_name": "p1.jpg", "text": "[1, 2] marks the spot ."}),
                json.dumps({"file_name": "p2.jpg", "captions": ["A man .", "A bike ."]})]
    else:
        rows = ["file_name,text,note", "p0.jpg,A dog runs .", 'p1.jpg,"[1, 2]"', 'p2.jpg,"  [""A man ."", ""A bike .""]"']
    (tmp_path / f"metadata.{kind}").write_bytes(b"\xef\xbb\xbf" + ("\n".join(rows) + "\n").encode())
    data = load_dataset(tmp_path, split_ratio=(1, 1, 1))
    assert data.captions["p0.jpg"] == ["A dog runs ."]
    assert data.captions["p1.jpg"] == (["[1, 2] marks the spot ."] if kind == "jsonl" else ["[1, 2]"])
    assert data.captions["p2.jpg"] == ["A man .", "A bike ."]


@pytest.mark.parametrize("layout", ["top", "split folders"])
def test_imagefolder_missing_images_name_the_metadata_file_and_skip_missing_goes_on(layout, tmp_path):
    folder = tmp_path if layout == "top" else tmp_path / "train"
    write_imagefolder(folder, CAPTIONS)
    place_images(folder, NAMES[1:])
    if layout == "split folders":
        write_imagefolder(tmp_path / "validation", small(2))
        place_images(tmp_path / "validation", NAMES[:2])
    with pytest.raises(DatasetError, match=f"1 of .* listed in {folder / 'metadata.jsonl'}"):
        load_dataset(tmp_path)
    data = load_dataset(tmp_path, skip_missing=True)
    assert not any(name.endswith("p0.jpg") and "validation" not in name for name in data.captions)
    if layout == "top":
        assert {k: len(v) for k, v in load_dataset(tmp_path, skip_missing=True, split_ratio=(7, 2, 2)).splits.items()} \
            == {"train": 7, "dev": 2, "test": 2}
        write_imagefolder(tmp_path / "small", small(2))
        place_images(tmp_path / "small", NAMES[:2])
        with pytest.raises(DatasetError, match=f"{tmp_path / 'small'}: 2 images are too few"):
            load_dataset(tmp_path / "small", split_ratio=(8, 1, 1))
    else:
        with pytest.raises(DatasetError, match=f"{tmp_path} has its own train/dev/test splits"):
            load_dataset(tmp_path, split_ratio=(1, 1, 1))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(images={}), r"expected an object with an 'images' list \(Karpathy's split JSON\)"),
    (lambda d: d["images"][1].update(split="holdout"),
     r"images\[1\] \(p1.jpg\): 'split' is 'holdout', expected one of \['restval', 'test', 'train', 'val'\]"),
    (lambda d: d["images"][2].update(sentences=["A dog ."]), r"images\[2\] \(p2.jpg\): sentences\[0\].raw"),
    (lambda d: d["images"][0].update(sentences="A dog ."), r"images\[0\] \(p0.jpg\): expected a non-empty 'sentences' list"),
])
def test_malformed_karpathy_records_are_named(change, message, tmp_path):
    path = edited_json(write_karpathy(tmp_path / "dataset_x.json", small(3), dict.fromkeys(NAMES[:3], "train")), change)
    place_images(tmp_path, NAMES[:3])
    with pytest.raises(DatasetError, match=f"{path}: {message}"):
        load_dataset(path, format_name="karpathy")


def test_karpathy_missing_images_name_the_json(tmp_path):
    path = write_karpathy(tmp_path / "dataset_x.json", small(3), dict.fromkeys(NAMES[:3], "train"))
    place_images(tmp_path, NAMES[1:3])
    with pytest.raises(DatasetError, match=f"1 of 3 images listed in {path}"):
        load_dataset(path)


def test_coco_val_is_halved_the_same_way_every_time_and_said_so_exactly(tmp_path, caplog):
    build_coco(tmp_path, None)
    with caplog.at_level(logging.WARNING):
        first = load_dataset(tmp_path).splits
    assert [first == load_dataset(tmp_path).splits for _ in range(5)] == [True] * 5
    assert f"{tmp_path / 'annotations'} has no test captions: half of the val images (seed {SPLIT_SEED}) are the " \
           "test split, 2 dev / 2 test" in [r.getMessage() for r in caplog.records]


# --- Hugging Face datasets (save_to_disk, Parquet, the Hub) --------------------------------------------------

def by_content(dataset) -> dict[str, dict[str, list[str]]]:
    """Split -> the SHA-256 of each image's bytes -> its captions: what training sees, whatever the names."""
    from pipeline.feature_cache import content_key
    return {split: {content_key(dataset.image_path(n)): sorted(dataset.captions[n]) for n in names}
            for split, names in dataset.splits.items()}


@pytest.mark.parametrize("kind", ["hf-datasets-disk", "hf-datasets-parquet"])
def test_a_hf_dataset_gives_the_same_images_and_captions_as_the_imagefolder_of_its_images(kind, pool, tmp_path):
    for folder, split in (("train", "train"), ("validation", "dev"), ("test", "test")):  # each image its own bytes
        write_imagefolder(tmp_path / "folder" / folder, {n: CAPTIONS[n] for n in SPLITS[split]}, "jsonl")
        for name in SPLITS[split]:
            (tmp_path / "folder" / folder / name).write_bytes(pool[NAMES.index(name)].read_bytes())
    reference = load_dataset(tmp_path / "folder")
    data, _ = BUILDERS[kind](tmp_path / "hf", pool)
    dataset = load_dataset(data, cache_dir=tmp_path / "cache")
    assert dataset.format == "hf-datasets" and by_content(dataset) == by_content(reference)
    assert all(dataset.image_path(n).read_bytes() for n in dataset.captions)  # real files, for the feature pass


@pytest.mark.parametrize("kind", ["disk", "parquet"])
def test_a_hf_dataset_without_splits_is_split_by_ratio_and_takes_caption_lists(kind, pool, tmp_path):
    import datasets

    rows = datasets.Dataset.from_dict({
        "photo": [{"bytes": pool[i].read_bytes(), "path": f"{n}"} for i, n in enumerate(NAMES)],
        "sentences": [CAPTIONS[n] for n in NAMES]}).cast_column("photo", datasets.Image())
    path = tmp_path / ("saved" if kind == "disk" else "rows.parquet")
    rows.save_to_disk(str(path)) if kind == "disk" else rows.to_parquet(str(path))
    dataset = load_dataset(path, split_ratio=(0.6, 0.2, 0.2), cache_dir=tmp_path / "cache")
    assert sorted(len(names) for names in dataset.splits.values()) == [2, 2, 8]
    assert sorted(sorted(c) for c in dataset.captions.values()) == sorted(sorted(CAPTIONS[n]) for n in NAMES)
    assert all(name.endswith(".jpg") for name in dataset.captions)  # the suffix of the row's path


def test_hf_columns_may_be_named(tmp_path, pool):
    import datasets

    rows = datasets.Dataset.from_dict({"raw": [{"bytes": pool[i].read_bytes(), "path": None} for i in (0, 2)],
                                       "other": [{"bytes": pool[1].read_bytes(), "path": None}] * 2,
                                       "description": ["A dog runs .", "A dog plays ."]})
    rows = rows.cast_column("raw", datasets.Image()).cast_column("other", datasets.Image())
    rows.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetError, match="several columns of the Image type .*--image-column"):
        load_dataset(tmp_path / "d", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="expected one caption column .*--caption-column"):
        load_dataset(tmp_path / "d", image_column="raw", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="no column 'words' \\(--caption-column\\)"):
        load_dataset(tmp_path / "d", image_column="raw", caption_column="words", cache_dir=tmp_path / "c")
    dataset = load_dataset(tmp_path / "d", image_column="raw", caption_column="description",
                           split_ratio=(1, 0, 1), cache_dir=tmp_path / "c")
    assert sorted(dataset.captions.values()) == [["A dog plays ."], ["A dog runs ."]]
    assert dataset.image_dir.is_relative_to(tmp_path / "c")  # the images go where --cache-dir says
    assert {dataset.image_path(name).is_file() for name in dataset.captions} == {True}
    with pytest.raises(DatasetError, match="--image-column does not apply to the imagefolder format"):
        load_dataset(build_imagefolder_jsonl(tmp_path / "folder", pool)[0], image_column="raw")


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows.update(text=["A dog runs .", ""]), r"\[train\], row 1: text: expected a caption"),
    (lambda rows: rows.update(text=["A dog runs .", None]), r"\[train\], row 1: text: expected a caption"),
    (lambda rows: rows.update(text=[["A dog runs ."], []]), r"\[train\], row 1: the caption list in 'text' is empty"),
    (lambda rows: rows["image"].__setitem__(0, None), r"\[train\], row 0: expected an image"),
    (lambda rows: rows["image"].__setitem__(1, rows["image"][0]) or rows.update(split="test"),
     r"\[test\]: an image of it is in another split too"),
])
def test_bad_hf_rows_are_named(tmp_path, pool, change, message):
    import datasets

    rows = {"image": [{"bytes": pool[0].read_bytes(), "path": None}, {"bytes": pool[1].read_bytes(), "path": None}],
            "text": ["A dog runs .", "A dog plays ."]}
    change(rows)
    test_rows = rows.pop("split", None) and {k: v[1:] for k, v in rows.items()}
    train = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    test = datasets.Dataset.from_dict(test_rows or {"image": [{"bytes": pool[3].read_bytes(), "path": None}],
                                                    "text": ["A cat ."]}).cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "d", cache_dir=tmp_path / "c")


def test_parquet_with_image_paths_reads_the_files_beside_it(tmp_path, pool):
    import datasets

    (tmp_path / "photos").mkdir()
    for i in range(3):
        shutil.copyfile(pool[i], tmp_path / "photos" / f"{i}.jpg")
    rows = datasets.Dataset.from_dict({"file": [f"photos/{i}.jpg" for i in (0, 1, 2, 2)],
                                       "caption": ["A dog .", "A cat .", "A man .", "A man sits ."]})
    rows.to_parquet(str(tmp_path / "rows.parquet"))
    dataset = load_dataset(tmp_path / "rows.parquet", image_column="file", split_ratio=(1, 1, 1),
                           cache_dir=tmp_path / "c")
    assert sorted(map(sorted, dataset.captions.values())) == [["A cat ."], ["A dog ."], ["A man .", "A man sits ."]]
    (tmp_path / "photos" / "1.jpg").unlink()
    with pytest.raises(DatasetError, match=r"rows.parquet, row 1: its image photos/1.jpg is not a file"):
        load_dataset(tmp_path / "rows.parquet", image_column="file", split_ratio=(1, 1, 1), cache_dir=tmp_path / "c")


def test_a_hub_dataset_is_read_at_its_revision_through_datasets(tmp_path, pool, monkeypatch):
    import datasets

    saved = write_hf_dataset(tmp_path / "saved", CAPTIONS, SPLITS, pool)
    asked = []

    def from_the_hub(name, revision=None, cache_dir=None):
        asked.append((name, revision))
        return datasets.load_from_disk(str(saved))

    monkeypatch.setattr(datasets, "load_dataset", from_the_hub)
    dataset = load_dataset("hf://someone/captions@v1.0", cache_dir=tmp_path / "c")
    assert asked == [("someone/captions", "v1.0")] and dataset.format == "hf-datasets"
    assert sorted(len(v) for v in dataset.splits.values()) == [2, 2, 8]
    load_dataset("hf://someone/captions", cache_dir=tmp_path / "c")
    assert asked[-1] == ("someone/captions", None)


def test_hf_column_errors_name_the_place_the_columns_and_the_option():
    import datasets

    from pipeline.formats.hf_datasets import caption_column, image_column

    features = {"raw": datasets.Image(), "other": datasets.Image(), "description": datasets.Value("string")}
    texts = {"text": datasets.Value("string"), "caption": datasets.Value("string")}
    cases = [
        (lambda: image_column(features, "photo", "d"),
         "d: no column 'photo' (--image-column); its columns are raw, other, description"),
        (lambda: image_column(features, None, "d"),
         "d: several columns of the Image type (raw, other): name one with --image-column"),
        (lambda: image_column(texts, None, "d"),
         "d: no column of the Image type (text, caption): name one with --image-column"),
        (lambda: caption_column(features, "words", "d"),
         "d: no column 'words' (--caption-column); its columns are raw, other, description"),
        (lambda: caption_column(texts, None, "d"),
         "d: expected one caption column of text, caption, captions, sentences, got ['text', 'caption']: "
         "name it with --caption-column"),
        (lambda: caption_column(features, None, "d"),
         "d: expected one caption column of text, caption, captions, sentences, got none: name it with "
         "--caption-column"),
    ]
    for call, message in cases:
        with pytest.raises(DatasetError) as error:
            call()
        assert str(error.value) == message
    assert image_column(features, "other", "d") == "other" and image_column({"im": datasets.Image()}, None, "d") == "im"
    assert caption_column(features, "description", "d") == "description" and caption_column(texts, "text", "d") == "text"

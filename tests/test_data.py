import logging
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.formats.base import DatasetError
from pipeline.formats import karpathy, load_dataset
from conftest import SHARED_FLICKR8K, needs_shared, write_image
from dataset_writers import place_images, write_coco, write_imagefolder, write_karpathy


def test_original_layout_skips_missing_image_once_and_reads_crlf(original_layout, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_dataset(original_layout)
    assert "2258277193_586949ec62.jpg.1" not in data.captions
    assert [r for r in caplog.records if "2258277193_586949ec62.jpg.1" in r.getMessage()].__len__() == 1
    assert data.split("train") == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]
    assert data.split("test") == ["img5.jpg"]
    assert data.captions["img0.jpg"][0] == "A dog number 0 runs , fast ."  # stripped, no '\r'
    assert len(data.captions["img0.jpg"]) == 5


def test_kaggle_layout_makes_deterministic_split(tmp_path, caplog):
    (tmp_path / "Images").mkdir()
    rows = ["image,caption"]
    for i in range(40):
        write_image(tmp_path / "Images" / f"k{i}.jpg", i, (8, 8))
        rows += [f"k{i}.jpg,A cat, sitting on mat number {i} ." for _ in range(5)]
    (tmp_path / "captions.txt").write_text("\r\n".join(rows))
    with caplog.at_level(logging.WARNING):
        first, second = load_dataset(tmp_path), load_dataset(tmp_path)
    assert (f"{tmp_path} has no split files: using a deterministic split (seed 8091) of 30 train / 5 dev / 5 test images"
            in [r.getMessage() for r in caplog.records])
    assert first.splits == second.splits
    sizes = {k: len(v) for k, v in first.splits.items()}
    assert sizes == {"train": 30, "dev": 5, "test": 5}
    assert set(sum(first.splits.values(), [])) == {f"k{i}.jpg" for i in range(40)}
    assert first.captions["k3.jpg"][0] == "A cat, sitting on mat number 3 ."
    assert first.image_path("k3.jpg") == tmp_path / "Images" / "k3.jpg"


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text("\r\n  \n"), "empty file"),
    (lambda root: (root / "Flickr8k_text" / "Flickr_8k.devImages.txt").unlink(), "Flickr_8k.devImages.txt"),
    (lambda root: [p.unlink() for p in (root / "Flicker8k_Dataset").iterdir()],
     "none of the images listed in .*Flickr8k.token.txt exist in .*Flicker8k_Dataset"),
    (lambda root: shutil.rmtree(root / "Flicker8k_Dataset"), "missing image folder: .*Flicker8k_Dataset"),
    (lambda root: (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text("no tab here\n"), "expected"),
])
def test_clear_errors_name_the_path(original_layout, breakage, message):
    breakage(original_layout)
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(original_layout)
    assert str(original_layout) in str(error.value)


def test_an_unknown_split_is_named_with_the_known_ones(original_layout):
    with pytest.raises(DatasetError, match=re.escape(f"{original_layout} has no 'val' split; it has ['dev', 'test', 'train']")):
        load_dataset(original_layout).split("val")


def test_a_byte_order_mark_is_not_part_of_the_first_name(original_layout):
    token_file = original_layout / "Flickr8k_text" / "Flickr8k.token.txt"
    token_file.write_bytes(b"\xef\xbb\xbf" + token_file.read_bytes())
    assert len(load_dataset(original_layout).captions["img0.jpg"]) == 5


def test_listed_images_without_captions_are_left_out_of_the_split(original_layout, caplog):
    token_file = original_layout / "Flickr8k_text" / "Flickr8k.token.txt"
    token_file.write_text("".join(line + "\n" for line in token_file.read_text().splitlines()
                                  if not line.startswith("img1.jpg")))
    with caplog.at_level(logging.WARNING):
        data = load_dataset(original_layout)
    assert data.split("train") == ["img0.jpg", "img2.jpg", "img3.jpg"]
    train_list = original_layout / "Flickr8k_text" / "Flickr_8k.trainImages.txt"
    assert f"{train_list}: 1 image(s) without captions or files left out" in [r.getMessage() for r in caplog.records]


def test_the_warning_about_missing_images_names_the_first_few(original_layout, caplog):
    images, source = original_layout / "Flicker8k_Dataset", original_layout / "Flickr8k_text" / "Flickr8k.token.txt"
    for i in (1, 2, 3, 4):
        (images / f"img{i}.jpg").unlink()  # with the bogus `.jpg.1`: five missing of seven
    with caplog.at_level(logging.WARNING):
        data = load_dataset(original_layout)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().endswith("skipping them")]
    assert skipped == [f"5 of 7 images listed in {source} are not in {images}: img1.jpg, img2.jpg, img3.jpg, "
                       "img4.jpg, 2258277193_586949ec62.jpg.1; skipping them"]
    assert sorted(data.captions) == ["img0.jpg", "img5.jpg"]
    (images / "img5.jpg").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_dataset(original_layout)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().endswith("skipping them")]
    assert skipped == [f"6 of 7 images listed in {source} are not in {images}: img1.jpg, img2.jpg, img3.jpg, "
                       "img4.jpg, img5.jpg ...; skipping them"]


def test_an_image_name_may_hold_a_hash_and_a_caption_a_tab(original_layout):
    write_image(original_layout / "Flicker8k_Dataset" / "photo#2.jpg", 9)
    token_file = original_layout / "Flickr8k_text" / "Flickr8k.token.txt"
    token_file.write_text(token_file.read_text() + "photo#2.jpg#0\tA dog\tjumps .\n")
    data = load_dataset(original_layout)
    assert data.captions["photo#2.jpg"] == ["A dog\tjumps ."]
    assert data.image_path("photo#2.jpg") == original_layout / "Flicker8k_Dataset" / "photo#2.jpg"


@pytest.mark.parametrize("bad_line", ["img0.jpg\tA dog without its caption number .",
                                      "img0.jpg#0 A dog after a space, not a tab, " + "and so on " * 8])
def test_a_malformed_token_line_is_named_by_its_number_and_quoted(original_layout, bad_line):
    token_file = original_layout / "Flickr8k_text" / "Flickr8k.token.txt"
    token_file.write_text("img0.jpg#0\tA dog .\n" + bad_line + "\n")
    message = f"{token_file}:2: expected 'IMAGE.jpg#N<TAB>caption', got {bad_line[:60]!r}"
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        load_dataset(original_layout)


def test_a_kaggle_row_without_a_caption_is_named_by_its_line(tmp_path):
    (tmp_path / "Images").mkdir()
    write_image(tmp_path / "Images" / "k.jpg", 0, (8, 8))
    (tmp_path / "captions.txt").write_text("image,caption\nk.jpg,A cat .\nk.jpg\n")
    message = f"{tmp_path / 'captions.txt'}:3: expected 'image,caption', got ['k.jpg']"
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("images, message", [(None, "missing image folder: .*Images"),
                                             ([], "none of the images listed in .*captions.txt exist in .*Images")])
def test_kaggle_layout_errors_name_the_path(tmp_path, images, message):
    if images is not None:
        (tmp_path / "Images").mkdir()
    (tmp_path / "captions.txt").write_text("image,caption\nk.jpg,A cat .\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_kaggle_captions_need_their_header(tmp_path):
    (tmp_path / "Images").mkdir()
    write_image(tmp_path / "Images" / "k.jpg", 0, (8, 8))
    (tmp_path / "captions.txt").write_text("k.jpg,A cat .\n")
    with pytest.raises(DatasetError, match="captions.txt: expected the header 'image,caption'"):
        load_dataset(tmp_path)


@pytest.mark.slow
def test_full_size_kaggle_flickr8k_splits_like_the_original(tmp_path):
    (tmp_path / "Images").mkdir()
    names = [f"{i:05d}.jpg" for i in range(8091)]
    for name in names:
        (tmp_path / "Images" / name).touch()  # the loader only needs the files to exist
    (tmp_path / "captions.txt").write_text("image,caption\n" + "".join(f"{n},A photo .\n" for n in names))
    data = load_dataset(tmp_path)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6091, "dev": 1000, "test": 1000}


def test_wrong_folder(tmp_path):
    with pytest.raises(DatasetError, match="none of the dataset formats"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")


@needs_shared
def test_real_flickr8k_splits():
    data = load_dataset(SHARED_FLICKR8K)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6000, "dev": 1000, "test": 1000}
    assert all(len(data.captions[n]) == 5 for n in data.split("test"))


# --- both layouts on generated files ------------------------------------------------------------

CAPTION = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1,
                  max_size=40).map(str.strip).filter(bool)
DATASET = st.dictionaries(st.from_regex(r"[a-z0-9_]{1,12}\.jpg", fullmatch=True),
                          st.lists(CAPTION, min_size=1, max_size=5), min_size=3, max_size=12)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=DATASET, crlf=st.booleans())
def test_the_original_layout_reads_back_what_was_written(dataset, crlf, tmp_path_factory):
    root = tmp_path_factory.mktemp("original")
    (root / "Flickr8k_text").mkdir()
    (root / "Flicker8k_Dataset").mkdir()
    names = sorted(dataset)
    for name in names:
        (root / "Flicker8k_Dataset" / name).touch()
    newline = "\r\n" if crlf else "\n"
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text(
        "".join(f"{name}#{k}\t{caption}{newline}" for name in names for k, caption in enumerate(dataset[name])),
        encoding="utf-8", newline="")
    splits = {"train": names[:-2], "dev": names[-2:-1], "test": names[-1:]}
    for split, listed in splits.items():
        (root / "Flickr8k_text" / f"Flickr_8k.{split}Images.txt").write_text(newline.join(listed) + newline,
                                                                             encoding="utf-8", newline="")
    data = load_dataset(root)
    assert data.captions == dataset and data.splits == splits


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=DATASET)
def test_the_kaggle_layout_reads_back_what_was_written(dataset, tmp_path_factory):
    """Captions with commas, quotes and any other character come back as written."""
    import csv
    import io
    root = tmp_path_factory.mktemp("kaggle")
    (root / "Images").mkdir()
    for name in dataset:
        (root / "Images" / name).touch()
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["image", "caption"])
    writer.writerows((name, caption) for name, captions in dataset.items() for caption in captions)
    (root / "captions.txt").write_text(text.getvalue(), encoding="utf-8")
    data = load_dataset(root)
    assert data.captions == dataset
    assert sorted(sum(data.splits.values(), [])) == sorted(dataset)


# --- the other formats on generated files ---------------------------------------------------------------

def split_of(data) -> dict[str, str]:
    return {name: split for split, names in data.splits.items() for name in names}


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=DATASET, folder=st.sampled_from(["", "val2014"]), choices=st.data())
def test_karpathy_json_reads_back_what_was_written(dataset, folder, choices, tmp_path_factory):
    root = tmp_path_factory.mktemp("karpathy")
    captions = {f"{folder}/{name}" if folder else name: caps for name, caps in dataset.items()}
    karpathy_splits = {name: choices.draw(st.sampled_from(sorted(karpathy.SPLIT_NAMES))) for name in captions}
    place_images(root, captions)
    data = load_dataset(write_karpathy(root / "dataset_x.json", captions, karpathy_splits))
    assert data.captions == captions
    assert split_of(data) == {name: karpathy.SPLIT_NAMES[split] for name, split in karpathy_splits.items()}


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=DATASET)
def test_coco_captions_read_back_what_was_written(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    place_images(root, dataset)
    data = load_dataset(write_coco(root / "captions.json", dataset))
    assert data.captions == dataset
    assert sorted(sum(data.splits.values(), [])) == sorted(dataset) and all(data.splits.values())


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=DATASET, kind=st.sampled_from(["jsonl", "csv"]), as_lists=st.booleans(), in_folders=st.booleans(),
       column=st.sampled_from(["text", "caption"]))
def test_imagefolder_reads_back_what_was_written(dataset, kind, as_lists, in_folders, column, tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    if kind == "csv" and not as_lists:  # a CSV cell holding a JSON list is read as a list of captions
        dataset = {name: [c for c in caps if not c.startswith("[")] or ["a caption"] for name, caps in dataset.items()}
    names = sorted(dataset)
    parts = {"train": names[:-2], "validation": names[-2:-1], "test": names[-1:]} if in_folders else {"": names}
    for folder, part in parts.items():
        write_imagefolder(root / folder, {name: dataset[name] for name in part}, kind, as_lists, column)
        place_images(root / folder, part)
    data = load_dataset(root)
    written = {f"{folder}/{name}" if folder else name: dataset[name] for folder, part in parts.items() for name in part}
    assert data.captions == written
    if in_folders:
        assert data.splits == {"train": [f"train/{n}" for n in parts["train"]],
                               "dev": [f"validation/{n}" for n in parts["validation"]],
                               "test": [f"test/{n}" for n in parts["test"]]}

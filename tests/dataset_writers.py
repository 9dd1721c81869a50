"""Write a dataset's captions in each format the loaders read: for the format tests and the property tests."""
import csv
import json
import shutil
from pathlib import Path

KARPATHY_SPLITS = {"train": "train", "dev": "val", "test": "test"}  # our split -> its name in Karpathy's JSON


def place_images(image_dir: Path, names, pool: list[Path] | None = None) -> None:
    """Each named image under `image_dir`: a copy of a pool image, or an empty file (the loaders only check that
    it exists)."""
    for i, name in enumerate(names):
        (image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        if pool:
            shutil.copyfile(pool[i % len(pool)], image_dir / name)
        else:
            (image_dir / name).touch()


def write_flickr8k(root: Path, captions: dict[str, list[str]], splits: dict[str, list[str]], pool=None) -> Path:
    (root / "Flickr8k_text").mkdir(parents=True)
    place_images(root / "Flicker8k_Dataset", captions, pool)
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text(
        "".join(f"{name}#{k}\t{caption}\n" for name, caps in captions.items() for k, caption in enumerate(caps)),
        encoding="utf-8")
    for split, names in splits.items():
        (root / "Flickr8k_text" / f"Flickr_8k.{split}Images.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def write_karpathy(path: Path, captions: dict[str, list[str]], split_of: dict[str, str]) -> Path:
    """Names with a folder (`val2014/x.jpg`) get it as `filepath`; split_of holds Karpathy's split names."""
    images = []
    for name, caps in captions.items():
        folder, _, file_name = name.rpartition("/")
        image = {"filepath": folder} if folder else {}
        image.update(filename=file_name, split=split_of[name],
                     sentences=[{"raw": c, "tokens": c.split()} for c in caps])
        images.append(image)
    path.write_text(json.dumps({"images": images, "dataset": "tiny"}), encoding="utf-8")
    return path


def write_coco(path: Path, captions: dict[str, list[str]]) -> Path:
    images = [{"id": 100 + i, "file_name": name, "width": 32, "height": 24} for i, name in enumerate(captions)]
    annotations = [{"id": k, "image_id": 100 + i, "caption": caption}
                   for i, caps in enumerate(captions.values()) for k, caption in enumerate(caps)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "images": images, "licenses": [], "annotations": annotations}),
                    encoding="utf-8")
    return path


def write_imagefolder(folder: Path, captions: dict[str, list[str]], kind: str = "jsonl", as_lists: bool = False,
                      column: str = "text") -> Path:
    """One metadata file in `folder`: a row per caption, or with `as_lists` one row per image with them all."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ([(name, caps) for name, caps in captions.items()] if as_lists else
            [(name, caption) for name, caps in captions.items() for caption in caps])
    if kind == "jsonl":
        (folder / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": name, column: value}) + "\n" for name, value in rows), encoding="utf-8")
    else:
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", column])
            writer.writerows((name, json.dumps(value) if as_lists else value) for name, value in rows)
    return folder


def write_hf_dataset(path: Path, captions: dict[str, list[str]], splits: dict[str, list[str]] | None, pool=None,
                     kind: str = "disk") -> Path:
    """A `datasets` dataset with an Image column of the images' bytes (a pool image each, or a few
    bytes), one row per caption: written by save_to_disk (kind "disk") or as Parquet files named by
    split ("parquet"). Without `splits`, one Dataset (or one Parquet file)."""
    import datasets

    hub_splits = {"train": "train", "dev": "validation", "test": "test"}
    names = list(captions)
    image_bytes = {name: pool[i % len(pool)].read_bytes() if pool else f"image {i}".encode()
                   for i, name in enumerate(names)}  # each image its own bytes (a pool image each)

    def rows(part):
        return datasets.Dataset.from_dict(
            {"image": [{"bytes": image_bytes[n], "path": None} for n in part for _ in captions[n]],
             "text": [c for n in part for c in captions[n]]}).cast_column("image", datasets.Image())

    if splits is None:
        data = rows(names)
        if kind == "disk":
            data.save_to_disk(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            data.to_parquet(str(path))
        return path
    parts = {hub_splits[split]: rows(part) for split, part in splits.items()}
    if kind == "disk":
        datasets.DatasetDict(parts).save_to_disk(str(path))
    else:
        (path / "data").mkdir(parents=True, exist_ok=True)
        for split, data in parts.items():
            data.to_parquet(str(path / "data" / f"{split}-00000-of-00001.parquet"))
    return path

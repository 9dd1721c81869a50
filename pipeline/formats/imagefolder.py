"""The Hugging Face ImageFolder convention: images with a metadata.jsonl or metadata.csv.

Each row names an image by `file_name` (relative to the metadata file's folder) and gives its
caption in a `text`, `caption` or `captions` column: one caption per row, several rows per image,
or a list of captions (a JSON list in metadata.jsonl; in metadata.csv a cell holding a JSON list).
The metadata sits at the top of the folder (then split by --split-ratio) or in split folders,
each with its own: train/, validation/ (our dev split; also valid/, val/ or dev/) and test/.
"""
import csv
import json
from pathlib import Path

from .base import (CaptionDataset, DatasetError, DatasetFormat, LoadOptions, caption_text, drop_missing_images,
                    refuse_split_ratio, split_by_ratio, splits_of)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
SPLIT_FOLDERS = {"train": "train", "validation": "dev", "valid": "dev", "val": "dev", "dev": "dev", "test": "test"}
CAPTION_COLUMNS = ("text", "caption", "captions")


def metadata_file(folder: Path) -> Path | None:
    found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise DatasetError(f"{folder} holds both {' and '.join(METADATA_FILES)}: keep one")
    return found[0] if found else None


def split_metadata(root: Path) -> dict[str, Path]:
    """Split folder name -> its metadata file, for the split folders that have one."""
    folders = {name: metadata_file(root / name) for name in SPLIT_FOLDERS if (root / name).is_dir()}
    return {name: path for name, path in folders.items() if path}


def detect(path: Path) -> bool:
    return path.is_dir() and any((folder / name).is_file() for folder in (path, *(path / s for s in SPLIT_FOLDERS))
                                 for name in METADATA_FILES)


def jsonl_rows(path: Path):
    """(line number, row) for each non-blank line."""
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def csv_rows(path: Path):
    """(line number, row) for each row; a cell that holds a JSON list becomes the list."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        for row in reader:
            for key, value in row.items():
                if isinstance(value, str) and value.lstrip().startswith("["):
                    row[key] = caption_list(value)
            yield reader.line_num, row


def caption_list(cell: str) -> list[str] | str:
    """A CSV cell holding a JSON list of captions as the list; any other cell (a caption that only starts with
    a bracket) as it is."""
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    return value if isinstance(value, list) and all(isinstance(text, str) for text in value) else cell


def read_metadata(path: Path, prefix: str) -> dict[str, list[str]]:
    """Image name (`prefix/file_name`) -> captions, in the file's order."""
    captions: dict[str, list[str]] = {}
    rows = jsonl_rows(path) if path.suffix == ".jsonl" else csv_rows(path)
    for number, row in rows:
        where = f"{path}:{number}"
        file_name = row.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            raise DatasetError(f"{where}: expected a 'file_name', got {file_name!r}")
        columns = [column for column in CAPTION_COLUMNS if row.get(column) is not None]
        if len(columns) != 1:
            raise DatasetError(f"{where}: expected one caption column of {', '.join(CAPTION_COLUMNS)}, got "
                               f"{columns or 'none'}")
        value = row[columns[0]]
        texts = value if isinstance(value, list) else [value]
        if not texts:
            raise DatasetError(f"{where}: the caption list is empty")
        name = f"{prefix}/{file_name.strip()}" if prefix else file_name.strip()
        captions.setdefault(name, []).extend(caption_text(text, f"{where}: {columns[0]}") for text in texts)
    if not captions:
        raise DatasetError(f"empty file: {path}")
    return captions


def load(root: Path, options: LoadOptions) -> CaptionDataset:
    top, by_split = metadata_file(root), split_metadata(root)
    if top and by_split:
        raise DatasetError(f"{root} has metadata at its top and in {', '.join(sorted(by_split))}/: keep one")
    if top:
        captions = drop_missing_images(read_metadata(top, ""), root, top, options.skip_missing)
        return CaptionDataset(root, captions, split_by_ratio(captions, options.split_ratio, root))
    refuse_split_ratio(options, root)
    captions: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    for folder, path in by_split.items():
        part = drop_missing_images(read_metadata(path, folder), root, path, options.skip_missing)
        captions.update(part)
        split_of.update(dict.fromkeys(part, SPLIT_FOLDERS[folder]))
    return CaptionDataset(root, captions, splits_of(split_of, captions))


FORMAT = DatasetFormat(
    "imagefolder", "a Hugging Face ImageFolder: metadata.jsonl or metadata.csv (file_name plus text or caption) at "
    "the top (split by --split-ratio) or in train/, validation/, test/", detect=detect, load=load,
    accepts=frozenset({"split_ratio"}))

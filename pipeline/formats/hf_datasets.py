"""Hugging Face datasets as they are published: the image bytes (or paths) inside the rows.

--data may be a folder written by `save_to_disk` (one Dataset, or a DatasetDict of splits), a
Parquet file or a folder of Parquet files (split by their names, as `datasets` does: train-*.parquet,
validation-*.parquet, ...), or hf://OWNER/NAME[@REVISION], a dataset on the Hub (the Hub's cache is
used offline, with HF_HUB_OFFLINE=1). Read through the `datasets` library (requirements-train.txt).

The image column is the one of `datasets`' Image type (or --image-column); the caption column is
text, caption, captions or sentences (or --caption-column), a string or a list of strings per row.
Rows of one image (the same bytes) pool their captions. Splits map as ImageFolder's do (validation
is our dev split); a dataset without splits is split by --split-ratio.

The images are written once into the feature cache's folder (--cache-dir), each named by the
SHA-256 of its bytes (an image given by a path, relative to the data's folder, is copied there),
so everything downstream reads files, and the features are those of the same images in any other
layout.
"""
import hashlib
import io
import logging
from pathlib import Path

from .base import CaptionDataset, DatasetError, DatasetFormat, LoadOptions, caption_text, split_by_ratio
from ..feature_cache import default_cache_dir
from ..files import atomic_path
from .imagefolder import SPLIT_FOLDERS

log = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
CAPTION_COLUMNS = ("text", "caption", "captions", "sentences")
IMAGES_FOLDER = "hf-images"  # under the cache root: the images of every dataset read, by content
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes at the top
ROWS_PER_READ = 256


def is_hub_name(path) -> bool:
    return str(path).startswith(HUB_PREFIX)


def parquet_files(path: Path) -> list[Path]:
    return [path] if path.suffix == ".parquet" and path.is_file() else sorted(path.rglob("*.parquet")) if path.is_dir() else []


def is_saved_folder(path: Path) -> bool:
    """Whether `path` is a folder that `save_to_disk` wrote."""
    return path.is_dir() and any((path / name).is_file() for name in SAVED_MARKERS)


def detect(path: Path) -> bool:
    return is_hub_name(path) or is_saved_folder(path) or bool(parquet_files(path))


def open_dataset(path: Path, cache_root: Path):
    """The dataset (or dict of split datasets) that `path` holds, through `datasets`."""
    try:
        import datasets
    except ImportError as error:
        raise DatasetError(f"reading {path} needs the `datasets` library: pip install -r requirements-train.txt "
                           f"({error})") from None
    cache = str(cache_root / "hf-datasets")  # `datasets`' Arrow copies of Parquet and Hub data
    try:
        if is_hub_name(path):
            name, _, revision = str(path).removeprefix(HUB_PREFIX).partition("@")
            return datasets.load_dataset(name, revision=revision or None, cache_dir=cache)
        if is_saved_folder(path):
            return datasets.load_from_disk(str(path))
        if path.is_file():
            return datasets.load_dataset("parquet", data_files=str(path), cache_dir=cache, split="train")
        return datasets.load_dataset("parquet", data_dir=str(path), cache_dir=cache)
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        raise DatasetError(f"{path}: `datasets` cannot read it ({type(error).__name__}: {error})") from None


def image_column(features: dict, named: str | None, where: str) -> str:
    import datasets

    if named:
        if named not in features:
            raise DatasetError(f"{where}: no column {named!r} (--image-column); its columns are {', '.join(features)}")
        return named
    found = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(found) != 1:
        raise DatasetError(f"{where}: {'no column' if not found else 'several columns'} of the Image type "
                           f"({', '.join(found) or ', '.join(features)}): name one with --image-column")
    return found[0]


def caption_column(features: dict, named: str | None, where: str) -> str:
    found = [named] if named else [name for name in CAPTION_COLUMNS if name in features]
    if named and named not in features:
        raise DatasetError(f"{where}: no column {named!r} (--caption-column); its columns are {', '.join(features)}")
    if len(found) != 1:
        raise DatasetError(f"{where}: expected one caption column of {', '.join(CAPTION_COLUMNS)}, got "
                           f"{found or 'none'}: name it with --caption-column")
    return found[0]


def stored_image(image, root: Path, base: Path | None, where: str) -> str:
    """The file name under `root` of one row's image ({"bytes", "path"}, as the Image type stores it
    undecoded, or a path): its bytes written once, named by their SHA-256."""
    if isinstance(image, str) and image.strip():
        image = {"bytes": None, "path": image}  # a column of file paths
    if not isinstance(image, dict) or not (image.get("bytes") or image.get("path")):
        raise DatasetError(f"{where}: expected an image (bytes or a path), got {str(image)[:80]!r}")
    data = image.get("bytes")
    if not data:
        source = Path(image["path"])
        source = source if source.is_absolute() or base is None else base / source
        if not source.is_file():
            raise DatasetError(f"{where}: its image {image['path']} is not a file")
        data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = f"{digest}{image_suffix(data, image.get('path'))}"
    if not (root / name).exists():
        with atomic_path(root / name) as tmp:
            tmp.write_bytes(data)
    return name


def image_suffix(data: bytes, path: str | None) -> str:
    """The image's file suffix, from its path when it has one, else from its format."""
    if path and Path(path).suffix:
        return Path(path).suffix.lower()
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return f".{(opened.format or 'img').lower()}"
    except (UnidentifiedImageError, OSError):
        return ".img"  # not an image: the feature pass says so, naming the row's file


def read_split(dataset, options: LoadOptions, root: Path, base: Path | None, where: str) -> dict[str, list[str]]:
    """Image name -> captions of one split, in the rows' order."""
    import datasets

    features = dataset.features
    images, texts = image_column(features, options.image_column, where), caption_column(features, options.caption_column, where)
    if isinstance(features[images], datasets.Image):
        dataset = dataset.cast_column(images, datasets.Image(decode=False))
    captions: dict[str, list[str]] = {}
    for start in range(0, len(dataset), ROWS_PER_READ):
        rows = dataset[start:start + ROWS_PER_READ]
        for offset, (image, value) in enumerate(zip(rows[images], rows[texts])):
            row = f"{where}, row {start + offset}"
            name = stored_image(image, root, base, row)
            values = value if isinstance(value, list) else [value]
            if not values:
                raise DatasetError(f"{row}: the caption list in {texts!r} is empty")
            captions.setdefault(name, []).extend(caption_text(text, f"{row}: {texts}") for text in values)
    if not captions:
        raise DatasetError(f"{where}: no rows")
    return captions


def load(path: Path, options: LoadOptions) -> CaptionDataset:
    import datasets

    cache_root = options.cache_dir or default_cache_dir()
    data = open_dataset(path, cache_root)
    root = cache_root / IMAGES_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    # relative image paths inside the rows are relative to the data's own folder
    base = None if is_hub_name(path) else (path if path.is_dir() else path.parent)
    if isinstance(data, datasets.Dataset):
        captions = read_split(data, options, root, base, str(path))
        return CaptionDataset(root, captions, split_by_ratio(captions, options.split_ratio, path))
    if options.split_ratio:
        raise DatasetError(f"{path} has its own splits ({', '.join(data)}): --split-ratio applies only to data without")
    unknown = [name for name in data if name not in SPLIT_FOLDERS]
    if unknown:
        raise DatasetError(f"{path}: split {unknown[0]!r} is none of {', '.join(SPLIT_FOLDERS)}")
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {}
    for name, split in data.items():
        part = read_split(split, options, root, base, f"{path} [{name}]")
        for image, texts in part.items():
            if image in captions:  # the same image in two splits would leak test photos into training
                raise DatasetError(f"{path} [{name}]: an image of it is in another split too ({image[:12]}...)")
            captions[image] = texts
        splits.setdefault(SPLIT_FOLDERS[name], []).extend(part)
    log.info("%s: %d images (%s), their files in %s", path, len(captions),
             ", ".join(f"{split} {len(names)}" for split, names in splits.items()), root)
    return CaptionDataset(root, captions, splits)


FORMAT = DatasetFormat(
    "hf-datasets", "a Hugging Face dataset: a save_to_disk folder, Parquet files (image bytes or paths inside), or "
    "hf://OWNER/NAME[@REVISION] from the Hub; --image-column and --caption-column name the columns", detect=detect,
    load=load, accepts=frozenset({"split_ratio", "image_column", "caption_column"}))

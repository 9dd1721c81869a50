"""The model folder: its files, and reading them with NumPy and h5py alone (no TensorFlow).

A folder describes itself: config.json names the decoder's architecture and sizes, the backbone
the decoder was trained on and, when one was exported, the encoder file that serves it.

  config.json           architecture, vocabulary size, caption length, encoder (see make_config)
  vocab.json            the word list
  decoder.weights.h5    the decoder's Keras weights (read here with h5py), stored in the precision
                        config.json's weights_dtype names (float32 unless it says float16)
  encoder.xml, encoder-*.bin   optional: the backbone exported for serving (OpenVINO IR in parts
                        under 25 MB, see export_encoder.py and pipeline/openvino_encoder.py)
"""
import fnmatch
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .decoder import DECODERS, ENSEMBLE_MEANS, ensemble_mean
from .familiarity import FAMILIARITY_FILE
from .files import atomic_path, write_text_atomically
from .vocab import Vocabulary

# 2: the architecture may be an ensemble, and the folder may hold familiarity.npz. Format 1 folders
# (one merge-lstm) read as they are: they hold nothing format 2 reads differently.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "decoder.weights.h5"
ARTIFACT_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)  # what every model folder holds
# what each training stage logs, one row per epoch (train.py, scst.py)
TRAINING_LOG, SELF_CRITICAL_LOG = "training_log.csv", "self_critical_log.csv"
# How decoder.weights.h5 may store its arrays; both load as float32. float16 halves the file: an
# ensemble of 3 merge decoders takes 14.6 MB, where float32's 29 MB is over the 25 MB a repo file may hold.
WEIGHTS_DTYPES = ("float32", "float16")
ENCODER_PATTERN = "encoder*"  # the exported encoder's files (encoder.xml, encoder-*.bin), when there is one
ENCODER_GRAPH_FILE, ENCODER_WEIGHTS_PATTERN = "encoder.xml", "encoder-*.bin"

# Bounds that keep a corrupt or hostile config.json from asking for absurd allocations; the
# largest real values are far below (Flickr8k: 2,536 words, 31 tokens, 256 units).
LIMITS = {"vocab_size": (5, 200_000), "max_length": (2, 200), "units": (1, 4096), "embedding_dim": (1, 4096),
          "feature_dim": (1, 65_536), "image_size": (32, 1024), "float32_blocks": (0, 64)}


# What a model folder may ask of memory, checked before a file is read: model folders come from
# the Hub, and a small file can declare a huge one (a zip bomb of an .npz, an HDF5 dataset declared
# 60000 x 60000). The decoder's budget counts its arrays and the NumPy steps' per-word gate table
# (vocabulary x 4 x units): 50 million float32 values are 200 MB, within the app's memory beside the
# encoder; weights/ (three merge decoders) takes 15 million.
MAX_DECODER_VALUES = 50_000_000
MAX_JSON_BYTES, MAX_JSON_DEPTH = 2**20, 32  # config.json and metrics.json hold a few KB, nested 4 deep
MAX_TOKEN_BYTES = 100  # a vocabulary's longest word, as JSON (Flickr8k's longest is 20)
MAX_CENTROIDS, MAX_DEV_IMAGES = 4096, 1_000_000  # familiarity.npz: 256 centroids and 1000 dev images today


class ArtifactError(Exception):
    """A model folder is missing a file, holds a corrupt one, or its pieces disagree."""


def folder_file(folder: Path, name: str) -> Path:
    """folder/name, refused unless `name` is a plain file name whose file (links followed) lies
    inside `folder` (or, for a Hub snapshot, among its repo's blobs): what a model folder names
    must never reach another folder."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ArtifactError(f"{Path(folder) / CONFIG_FILE} names {name!r}: a model folder's files are plain names "
                            "inside it")
    folder = Path(folder)
    path = folder / name
    # a Hub snapshot's files are links to its repo's blobs (huggingface_hub's cache layout)
    homes = [folder.resolve(), *([folder.parent.parent.resolve() / "blobs"] if folder.parent.name == "snapshots" else [])]
    if path.exists() and not any(path.resolve().is_relative_to(home) for home in homes):
        raise ArtifactError(f"{path} links outside its model folder {folder}")
    return path


def _json_depth(value) -> int:
    """How deeply `value` nests lists and objects (iteratively: a deep file cannot exhaust the stack)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            todo.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """A model folder's JSON object, refused before it is read when over `max_bytes`, and when
    nested over MAX_JSON_DEPTH deep."""
    if not path.is_file():
        raise ArtifactError(f"missing {path.name} in the model folder {path.parent}")
    if path.stat().st_size > max_bytes:
        raise ArtifactError(f"{path} is {path.stat().st_size:,} bytes, over the {max_bytes:,} this file may take")
    too_deep = ArtifactError(f"{path} is corrupt: nested more than {MAX_JSON_DEPTH} deep")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is corrupt: {error}") from None
    except RecursionError:  # nested too deeply even for the parser
        raise too_deep from None
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise too_deep
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is corrupt: expected a JSON object, got {type(data).__name__}")
    return data


def _field(config: dict, path: Path, *keys: str, kind: type = int):
    """config[keys[0]][keys[1]]..., checked for presence, type and (for sizes) LIMITS."""
    value = config
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise ArtifactError(f"{path}: missing the key {'.'.join(keys[:depth + 1])!r}")
        value = value[key]
    name = ".".join(keys)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ArtifactError(f"{path}: {name} must be an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ArtifactError(f"{path}: {name} must be a {kind.__name__}, got {value!r}")
    if keys[-1] in LIMITS:
        low, high = LIMITS[keys[-1]]
        if not low <= value <= high:
            raise ArtifactError(f"{path}: {name}={value} is outside {low}..{high}")
    return value


def read_config(folder: Path) -> dict:
    """config.json, with every value the code uses checked before anything is built from it."""
    path = folder / CONFIG_FILE
    config = read_json(path)
    if config.get("format_version") not in READABLE_FORMATS:
        raise ArtifactError(f"{path}: format_version {config.get('format_version')!r}, "
                            f"this code reads {' and '.join(map(str, READABLE_FORMATS))}")
    _field(config, path, "vocab_size")
    _field(config, path, "max_length")
    name = _field(config, path, "architecture", "name", kind=str)
    if name not in DECODERS:
        raise ArtifactError(f"{path}: architecture {name!r} is not one this code builds ({', '.join(DECODERS)})")
    if name == "ensemble":
        members = _field(config, path, "architecture", "members", kind=list)
        if not members or not all(isinstance(m, dict) and m.get("name") == "merge-lstm" for m in members):
            raise ArtifactError(f"{path}: architecture.members must list merge-lstm decoders")
        for i, member in enumerate(members):
            for key, kind in (("units", int), ("embedding_dim", int), ("dropout", float)):
                _field({"member": member}, path, "member", key, kind=kind)
        if ensemble_mean(config["architecture"]) not in ENSEMBLE_MEANS:
            raise ArtifactError(f"{path}: architecture.mean {config['architecture']['mean']!r} is not one of "
                                f"{', '.join(ENSEMBLE_MEANS)}")
    else:
        _field(config, path, "architecture", "units")
        _field(config, path, "architecture", "embedding_dim")
        _field(config, path, "architecture", "dropout", kind=float)
    for key in ("backbone", "preprocessing", "weights_fingerprint"):
        _field(config, path, "encoder", key, kind=str)
    _field(config, path, "encoder", "feature_dim")
    _field(config, path, "encoder", "image_size")
    if "exported" in config["encoder"]:
        for key in ("runtime", "sha256", "precision"):
            _field(config, path, "encoder", "exported", key, kind=str)
        for name in _field(config, path, "encoder", "exported", "weight_files", kind=list):
            folder_file(folder, name)
            if not fnmatch.fnmatchcase(name, ENCODER_WEIGHTS_PATTERN):
                raise ArtifactError(f"{path}: encoder.exported.weight_files names {name!r}, not a file "
                                    f"{ENCODER_WEIGHTS_PATTERN}")
        if "float32_blocks" in config["encoder"]["exported"]:
            _field(config, path, "encoder", "exported", "float32_blocks")
    if config.get("weights_dtype", "float32") not in WEIGHTS_DTYPES:
        raise ArtifactError(f"{path}: weights_dtype {config['weights_dtype']!r} is not one of {', '.join(WEIGHTS_DTYPES)}")
    if "familiarity" in config:
        threshold = _field(config, path, "familiarity", "unfamiliar_below", kind=float)
        if not 0 <= threshold <= 1:
            raise ArtifactError(f"{path}: familiarity.unfamiliar_below={threshold} is outside 0..1")
    values = decoder_values(config)
    if values > MAX_DECODER_VALUES:
        raise ArtifactError(f"{path}: the decoder it describes takes {values:,} values ({values * 4 / 2**20:,.0f} MB "
                            f"as float32), over the {MAX_DECODER_VALUES:,} a model may take")
    return config


def decoder_values(config: dict) -> int:
    """How many float32 values config.json's decoder holds in memory while it captions."""
    return DECODERS[config["architecture"]["name"]].values_in_memory(config)


def exported_files(exported: dict) -> list[str]:
    """The exported encoder's files (config.json's encoder.exported): the graph, then the weights' parts in order."""
    return [ENCODER_GRAPH_FILE, *exported["weight_files"]]


def model_files(folder: Path, config: dict) -> list[Path]:
    """Every file the model in `folder` is loaded from, as config.json names them, each checked to
    lie inside `folder`."""
    names = [*ARTIFACT_FILES, *(exported_files(config["encoder"]["exported"]) if "exported" in config["encoder"] else []),
             *([FAMILIARITY_FILE] if "familiarity" in config else [])]
    return [folder_file(folder, name) for name in names]


def read_vocab(folder: Path, config: dict) -> Vocabulary:
    path = folder_file(folder, VOCAB_FILE)
    try:
        vocab = Vocabulary(read_json(path, config["vocab_size"] * MAX_TOKEN_BYTES + 1024)["tokens"])
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{path} is not a vocabulary: {error}") from None
    if len(vocab) != config["vocab_size"]:
        raise ArtifactError(f"{folder}: vocab.json holds {len(vocab)} tokens but config.json says "
                            f"vocab_size={config['vocab_size']}; the files come from different models")
    return vocab


def read_keras_weights(path: Path, max_values: int = MAX_DECODER_VALUES) -> dict[str, list[np.ndarray]]:
    """Each layer's weights, by layer name, from a Keras 3 `.weights.h5` file; refused before any
    is read when the file declares more than `max_values` values in all.

    Keras stores a layer's variables under layers/<path>/vars/<i> with the layer's name in the
    group's attributes, and a recurrent layer's under its cell's vars, in the same order as
    `layer.weights`. Floating-point arrays come back as float32 whatever the file stores.
    """
    import h5py

    if not path.is_file():
        raise ArtifactError(f"missing {path.name} in the model folder {path.parent}")
    weights = {}
    try:
        with h5py.File(path, "r") as f:
            layers = [[layer["vars"]] + ([layer["cell"]["vars"]] if "cell" in layer else [])
                      for layer in f["layers"].values()]
            declared = sum(g[str(i)].size for groups in layers for g in groups for i in range(len(g)))
            if declared > max_values:
                raise ArtifactError(f"{path} declares {declared:,} values, over the {max_values:,} that config.json's "
                                    "decoder has")
            for groups in layers:
                arrays = [np.asarray(g[str(i)]) for g in groups for i in range(len(g))]
                arrays = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in arrays]
                if arrays:
                    weights[groups[0].attrs["name"]] = arrays
    except (OSError, KeyError, ValueError) as error:  # not HDF5, truncated, or not Keras' layout
        raise ArtifactError(f"{path} is not a Keras weights file: {type(error).__name__}: {error}") from None
    return weights


def make_config(vocab_size: int, max_length: int, backbone_fingerprint: str, **extra) -> dict:
    """config.json of a new model folder: the decoder's architecture and the encoder it reads."""
    import keras
    import tensorflow as tf

    from .decoder import ARCHITECTURE
    from .encoder import BACKBONE, FEATURE_DIM, IMAGE_SIZE, PREPROCESSING

    return {
        "format_version": FORMAT_VERSION,
        "architecture": dict(ARCHITECTURE),
        "vocab_size": vocab_size,
        "max_length": max_length,
        "encoder": {"backbone": BACKBONE, "image_size": IMAGE_SIZE, "pooling": "avg",
                    "feature_dim": FEATURE_DIM, "preprocessing": PREPROCESSING,
                    "weights_fingerprint": backbone_fingerprint},
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        **extra,
    }


def write_config(folder: Path, config: dict) -> None:
    """config.json, replaced atomically: a reader sees the old file or the new one, never half."""
    write_text_atomically(Path(folder) / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def build_keras_decoder(config: dict):
    from .decoder import build_keras
    return build_keras(config)


def save_artifact(folder: str | Path, model, vocab: Vocabulary, config: dict) -> Path:
    """Write a trained Keras decoder, its vocabulary and config.json to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # an uncompiled copy: a compiled model's weights file also holds the optimizer's state (3x the size)
    inference = build_keras_decoder(config)
    inference.set_weights(model.get_weights())
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        inference.save_weights(tmp)
        if config.get("weights_dtype") == "float16":
            _store_as_float16(tmp)
    vocab.save(folder / VOCAB_FILE)
    write_config(folder, config)
    return folder


def _store_as_float16(path: Path) -> None:
    """Rewrite a Keras weights file with its float32 arrays as float16 (Keras' load_weights casts
    them back). A new file, not datasets replaced in place: HDF5 does not give freed space back."""
    import h5py

    def copy(name, item):
        if isinstance(item, h5py.Group):
            target.create_group(name)
        else:
            array = item[()]
            target.create_dataset(name, data=array.astype(np.float16) if item.dtype == np.float32 else array)
        target[name].attrs.update(item.attrs)

    with atomic_path(path) as converted, h5py.File(path, "r") as source, h5py.File(converted, "w") as target:
        target.attrs.update(source.attrs)
        source.visititems(copy)


def copy_companion_files(source: Path, folder: Path, config: dict) -> None:
    """Copy what `source` serves with besides the decoder (the exported encoder, the familiarity
    calibration) into `folder`, each file atomically, for a new decoder on the same encoder."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for path in model_files(Path(source), config):
        if path.name not in ARTIFACT_FILES:
            with atomic_path(folder_file(folder, path.name)) as tmp:
                shutil.copyfile(path, tmp)


def check_npz(path: Path, max_bytes: dict[str, int]) -> None:
    """Refuse an .npz before NumPy inflates it: arrays other than `max_bytes` names, or larger
    than it allows (an .npz is a zip file, and a few MB of it can inflate to gigabytes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if name not in max_bytes:
                    raise ArtifactError(f"{path} holds {info.filename!r}, not one of {', '.join(max_bytes)}")
                if info.file_size > max_bytes[name]:
                    raise ArtifactError(f"{path}: {name} inflates to {info.file_size:,} bytes, over the "
                                        f"{max_bytes[name]:,} it may take")
    except (OSError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"{path} is not an .npz file: {error}") from None


def load_keras_decoder(folder: str | Path):
    """The folder's decoder as a Keras model (training and bench's original loop; serving uses NumPy)."""
    folder = Path(folder)
    model = build_keras_decoder(read_config(folder))
    model.load_weights(folder / WEIGHTS_FILE)
    return model

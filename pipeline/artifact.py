"""The model folder: every fact of its files, and reading them with NumPy and h5py alone (no TensorFlow).

A folder describes itself: config.json names the decoder's architecture and sizes, the backbone
the decoder was trained on and, when one was exported, the encoder files that serve it. What
each architecture and runtime needs of config.json is checked through their registries
(pipeline/decoder.py's DECODERS, pipeline/encoder_runtimes.py's ENCODER_RUNTIMES).

  config.json           architecture, vocabulary size, caption length, encoder (see make_config)
  vocab.json            the word list
  decoder.weights.h5    the decoder's Keras weights (read here with h5py), stored in the precision
                        config.json's weights_dtype names (float32 unless it says float16)
  encoder.xml, encoder-NNNNN-of-NNNNN.bin   optional: the backbone exported for serving (OpenVINO
                        IR, its weights in parts of ENCODER_PART_BYTES; export_encoder.py)
  familiarity.npz       optional: how close a photo is to the training photos (pipeline/familiarity.py)
  exit_flow.weights.h5  optional: the backbone's exit flow as training tuned it (train.py --tune-exit-flow),
                        float16, which replaces the ImageNet one wherever the Keras backbone is built
  metrics.json, training_log.csv, self_critical_log.csv   optional: how the model was made and scored

Every file must fit MAX_FILE_BYTES, what a Hub or git repo file may hold without large-file storage.
"""
import fnmatch
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decoder import ARCHITECTURE, DECODERS, decoder_pooling
from .encoder import BACKBONE, FEATURE_DIM, IMAGE_SIZE, PREPROCESSING
from .encoder_runtimes import ENCODER_RUNTIMES, EXPORTED_RUNTIMES
from .familiarity import Familiarity
from .files import atomic_path, sha256_of, write_text_atomically
from .vocab import Vocabulary

# 2: the architecture may be an ensemble, and the folder may hold the familiarity file. Format 1 folders
# (one merge-lstm) read as they are: they hold nothing format 2 reads differently.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "decoder.weights.h5"
ARTIFACT_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)  # what every model folder holds
FAMILIARITY_FILE = "familiarity.npz"
EXIT_FLOW_FILE = "exit_flow.weights.h5"  # config.json's encoder.tuned_exit_flow says the folder holds one
# what each training stage logs, one row per epoch (train.py, scst.py), and evaluate.py's scores
TRAINING_LOG, SELF_CRITICAL_LOG, METRICS_FILE = "training_log.csv", "self_critical_log.csv", "metrics.json"
REPORT_FILES = (METRICS_FILE, TRAINING_LOG, SELF_CRITICAL_LOG)  # published beside the model when present
CARD_FILE = "README.md"  # the model card of a published folder
ENCODER_GRAPH_FILE, ENCODER_WEIGHTS_PATTERN = "encoder.xml", "encoder-*.bin"
ENCODER_PATTERN = "encoder*"  # the exported encoder's files, when there is one
SERVED_FILES = [*ARTIFACT_FILES, ENCODER_PATTERN, FAMILIARITY_FILE, EXIT_FLOW_FILE]  # what loading needs: not the card or logs
# The largest file a model folder may hold: the Hub stores bigger files only through its
# large-file storage, and git hosts warn or refuse. The exported encoder is written in parts
# of ENCODER_PART_BYTES (its float16 weights, 41 MB, in three parts), below it.
MAX_FILE_BYTES = 25 * 10**6
ENCODER_PART_BYTES = 20 * 2**20
# How decoder.weights.h5 may store its arrays; both load as float32. float16 halves the file: an
# ensemble of 3 merge decoders takes 14.6 MB, where float32's 29 MB is over MAX_FILE_BYTES.
WEIGHTS_DTYPES = ("float32", "float16")

# Bounds that keep a corrupt or hostile config.json from asking for absurd allocations; the
# largest real values are far below (Flickr8k: 2,536 words, 31 tokens, 256 units).
LIMITS = {"vocab_size": (5, 200_000), "max_length": (2, 200), "units": (1, 4096), "embedding_dim": (1, 4096),
          "attention_dim": (1, 4096),
          "feature_dim": (1, 65_536), "image_size": (32, 1024), "float32_blocks": (0, 64)}


# What a model folder may ask of memory, checked before a file is read: model folders come from
# the Hub, and a small file can declare a huge one (a zip bomb of an .npz, an HDF5 dataset declared
# 60000 x 60000). The decoder's budget counts its arrays and the NumPy steps' per-word gate table
# (vocabulary x 4 x units): 50 million float32 values are 200 MB, within the app's memory beside the
# encoder; weights/ (three merge decoders) takes 15 million.
MAX_DECODER_VALUES = 50_000_000
MAX_JSON_BYTES, MAX_JSON_DEPTH = 2**20, 32  # config.json and metrics.json hold a few KB, nested 4 deep
MAX_TOKEN_BYTES = 100  # a vocabulary's longest word, as JSON (Flickr8k's longest is 20)
MAX_CENTROIDS, MAX_DEV_IMAGES = 4096, 1_000_000  # the familiarity file: 256 centroids and 1000 dev images today


class ArtifactError(Exception):
    """A model folder is missing a file, holds a corrupt one, or its pieces disagree."""


def is_model_folder(folder: Path) -> bool:
    """Whether `folder` holds the files every model folder has (ARTIFACT_FILES)."""
    return all((Path(folder) / name).is_file() for name in ARTIFACT_FILES)


def encoder_weight_files(parts: int) -> list[str]:
    """The names of an exported encoder's weights in `parts` parts, in order (ENCODER_WEIGHTS_PATTERN)."""
    return [f"encoder-{i:05d}-of-{parts:05d}.bin" for i in range(1, parts + 1)]


def check_file_size(path: Path) -> None:
    """Refuse a model folder's file over MAX_FILE_BYTES, which could not be published."""
    size = Path(path).stat().st_size
    if size > MAX_FILE_BYTES:
        raise ArtifactError(f"{path} is {size:,} bytes, over the {MAX_FILE_BYTES:,} a model folder's file may take "
                            "(a Hub or git repo file without large-file storage)")


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


@dataclass(frozen=True)
class ConfigSection:
    """One object of config.json (the whole file, or one nested in it), whose values are read with
    checks: present, of their type and, for sizes, within LIMITS. The registries' checks
    (DECODERS, ENCODER_RUNTIMES) read their own sections through it."""
    value: dict
    path: Path
    where: tuple[str, ...] = ()

    def _name(self, key: str) -> str:
        return ".".join((*self.where, key))

    def error(self, message: str) -> ArtifactError:
        """An error about this section, naming the file and where in it."""
        return ArtifactError(f"{self.path}: {'.'.join(self.where) + ' ' if self.where else ''}{message}")

    def get(self, key: str, kind: type = int):
        if key not in self.value:
            raise ArtifactError(f"{self.path}: missing the key {self._name(key)!r}")
        value = self.value[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ArtifactError(f"{self.path}: {self._name(key)} must be an integer, got {value!r}")
        if not isinstance(value, kind):
            raise ArtifactError(f"{self.path}: {self._name(key)} must be a {kind.__name__}, got {value!r}")
        if key in LIMITS:
            low, high = LIMITS[key]
            if not low <= value <= high:
                raise ArtifactError(f"{self.path}: {self._name(key)}={value} is outside {low}..{high}")
        return value

    def section(self, key: str) -> "ConfigSection":
        return ConfigSection(self.get(key, dict), self.path, (*self.where, key))

    def items(self, key: str) -> list["ConfigSection"]:
        """The objects of a list, each a section (anything else in the list is refused)."""
        values = self.get(key, list)
        if not all(isinstance(item, dict) for item in values):
            raise ArtifactError(f"{self.path}: {self._name(key)} must list objects")
        return [ConfigSection(item, self.path, (*self.where, f"{key}[{i}]")) for i, item in enumerate(values)]


def read_config(folder: Path) -> dict:
    """config.json, with every value the code uses checked before anything is built from it."""
    path = folder / CONFIG_FILE
    config = read_json(path)
    if config.get("format_version") not in READABLE_FORMATS:
        raise ArtifactError(f"{path}: format_version {config.get('format_version')!r}, "
                            f"this code reads {' and '.join(map(str, READABLE_FORMATS))}")
    root = ConfigSection(config, path)
    root.get("vocab_size")
    root.get("max_length")
    architecture = root.section("architecture")
    name = architecture.get("name", str)
    if name not in DECODERS:
        raise ArtifactError(f"{path}: architecture {name!r} is not one this code builds ({', '.join(DECODERS)})")
    DECODERS[name].check(architecture)
    encoder = root.section("encoder")
    for key in ("backbone", "preprocessing", "weights_fingerprint"):
        encoder.get(key, str)
    encoder.get("feature_dim")
    encoder.get("image_size")
    if encoder.value.get("pooling", "avg") != decoder_pooling(config["architecture"]):
        raise encoder.error(f"pooling must be {decoder_pooling(config['architecture'])!r}, what the "
                            f"{name} decoder reads, got {encoder.value.get('pooling')!r}")
    if "exported" in config["encoder"]:
        exported = encoder.section("exported")
        for key in ("runtime", "sha256", "precision"):
            exported.get(key, str)
        if exported.value["runtime"] not in EXPORTED_RUNTIMES:
            raise exported.error(f"runtime {exported.value['runtime']!r} is not supported "
                                 f"({', '.join(EXPORTED_RUNTIMES)})")
        for name in exported.get("weight_files", list):
            folder_file(folder, name)
            if not fnmatch.fnmatchcase(name, ENCODER_WEIGHTS_PATTERN):
                raise ArtifactError(f"{path}: encoder.exported.weight_files names {name!r}, not a file "
                                    f"{ENCODER_WEIGHTS_PATTERN}")
        ENCODER_RUNTIMES[exported.value["runtime"]].check_export(exported)
        if exported.value.get("pooling", "avg") != config["encoder"].get("pooling", "avg"):
            raise exported.error(f"pooling {exported.value.get('pooling', 'avg')!r} is not the encoder's "
                                 f"{config['encoder'].get('pooling', 'avg')!r}: the export gives other features")
    if "tuned_exit_flow" in config["encoder"]:
        encoder.section("tuned_exit_flow").get("from_fingerprint", str)
    if config.get("weights_dtype", "float32") not in WEIGHTS_DTYPES:
        raise ArtifactError(f"{path}: weights_dtype {config['weights_dtype']!r} is not one of {', '.join(WEIGHTS_DTYPES)}")
    if "familiarity" in config:
        threshold = root.section("familiarity").get("unfamiliar_below", float)
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


def exported_encoder_files(folder: Path, exported: dict) -> list[Path]:
    """The files of the exported encoder that `exported` (config.json's encoder.exported) names, each
    inside the folder and present, and together hashing to its sha256: a swapped or truncated file
    is refused, not silently served."""
    folder = Path(folder)
    paths = [folder_file(folder, name) for name in exported_files(exported)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ArtifactError(f"{folder}: {CONFIG_FILE} names an exported encoder but {', '.join(missing)} is missing")
    if sha256_of(*paths) != exported["sha256"]:
        raise ArtifactError(f"{folder}: {', '.join(p.name for p in paths)} do not match the sha256 in {CONFIG_FILE} "
                            "(corrupt, or from another export)")
    return paths


def model_files(folder: Path, config: dict) -> list[Path]:
    """Every file the model in `folder` is loaded from, as config.json names them, each checked to
    lie inside `folder`."""
    names = [*ARTIFACT_FILES, *(exported_files(config["encoder"]["exported"]) if "exported" in config["encoder"] else []),
             *([FAMILIARITY_FILE] if "familiarity" in config else []),
             *([EXIT_FLOW_FILE] if "tuned_exit_flow" in config["encoder"] else [])]
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


def make_config(vocab_size: int, max_length: int, backbone_fingerprint: str, architecture: dict = ARCHITECTURE,
                **extra) -> dict:
    """config.json of a new model folder: the decoder's architecture and the encoder it reads."""
    import keras
    import tensorflow as tf

    return {
        "format_version": FORMAT_VERSION,
        "architecture": dict(architecture),
        "vocab_size": vocab_size,
        "max_length": max_length,
        "encoder": {"backbone": BACKBONE, "image_size": IMAGE_SIZE, "pooling": decoder_pooling(architecture),
                    "feature_dim": FEATURE_DIM, "preprocessing": PREPROCESSING,
                    "weights_fingerprint": backbone_fingerprint},
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        **extra,
    }


def write_config(folder: Path, config: dict) -> None:
    """config.json, replaced atomically: a reader sees the old file or the new one, never half."""
    write_text_atomically(Path(folder) / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def build_keras_decoder(config: dict):
    """The Keras model of the decoder that config.json names (DECODERS)."""
    return DECODERS[config["architecture"]["name"]].build(config)


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
        check_file_size(tmp)
    vocab.save(folder / VOCAB_FILE)
    write_config(folder, config)
    return folder


def save_exit_flow(folder: str | Path, exit_flow) -> Path:
    """Write a tuned exit flow (a Keras model, pipeline.encoder.exit_flow) into the folder, float16:
    13.7 MB, where float32's 27 MB is over MAX_FILE_BYTES. Load it back before taking the
    backbone's fingerprint or exporting it: what is served is the float16 values."""
    path = Path(folder) / EXIT_FLOW_FILE
    with atomic_path(path) as tmp:
        exit_flow.save_weights(tmp)
        _store_as_float16(tmp)
        check_file_size(tmp)
    return path


def exit_flow_file(folder: Path, config: dict) -> Path | None:
    """The folder's tuned exit flow, when config.json says it has one (checked to be there)."""
    if "tuned_exit_flow" not in config["encoder"]:
        return None
    path = folder_file(folder, EXIT_FLOW_FILE)
    if not path.is_file():
        raise ArtifactError(f"{folder}: {CONFIG_FILE} names a tuned exit flow but {EXIT_FLOW_FILE} is missing")
    return path


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


def write_familiarity(folder: Path, familiarity: Familiarity) -> dict:
    """Store the familiarity calibration in the folder; returns the entry for config.json's `familiarity`."""
    return familiarity.save(Path(folder) / FAMILIARITY_FILE)


def read_familiarity(folder: Path, config: dict) -> Familiarity | None:
    """The folder's familiarity calibration, if its config names one (folders from before have none)."""
    if "familiarity" not in config:
        return None
    feature_dim = config["encoder"]["feature_dim"]
    path = folder_file(folder, FAMILIARITY_FILE)
    # each array's .npy: its values (float16 centroids are written; float32 would do) and a header
    check_npz(path, {"centroids": MAX_CENTROIDS * feature_dim * 4 + 512, "dev_distances": MAX_DEV_IMAGES * 8 + 512})
    try:
        familiarity = Familiarity.load(path)
    except (OSError, KeyError, ValueError) as error:
        raise ArtifactError(f"{path} is not a familiarity calibration: {type(error).__name__}: {error}") from None
    if familiarity.centroids.shape[1] != feature_dim:
        raise ArtifactError(f"{path} was fitted on {familiarity.centroids.shape[1]}-wide features, the encoder "
                            f"gives {feature_dim}")
    return familiarity


def load_keras_decoder(folder: str | Path):
    """The folder's decoder as a Keras model (training and bench's original loop; serving uses NumPy)."""
    folder = Path(folder)
    model = build_keras_decoder(read_config(folder))
    model.load_weights(folder / WEIGHTS_FILE)
    return model

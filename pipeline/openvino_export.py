"""Exporting the Keras backbone for serving: OpenVINO IR in a model folder (export_encoder.py, train.py).

Needs TensorFlow, OpenVINO and NNCF (requirements-train.txt). What the options measured is in
pipeline/openvino_encoder.py and docs/serving.md.
"""
import shutil
import tempfile
from pathlib import Path

from .artifact import ENCODER_GRAPH_FILE, ENCODER_PART_BYTES, ENCODER_WEIGHTS_PATTERN, encoder_weight_files
from .files import sha256_of
from .openvino_encoder import PRECISIONS, RUNTIME

WEIGHT_FORMATS = ("float16", "float32", "int8")
# The measured choice (docs/serving.md): the same captions as Keras float32
DEFAULT_WEIGHTS, DEFAULT_PRECISION = "float16", "f32"
ENTRY_FLOW_BLOCKS = 3  # Xception's first residual blocks, kept in float32 by the bfloat16 option


def add_export_arguments(parser) -> None:
    """How the encoder is exported (export_encoder.py, train.py)."""
    group = parser.add_argument_group("encoder export (OpenVINO)")
    group.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=DEFAULT_WEIGHTS,
                       help=f"how the file stores the weights (default {DEFAULT_WEIGHTS})")
    group.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                       help=f"compute precision (default {DEFAULT_PRECISION}); bf16 runs where the CPU has it "
                            "natively, else f32")
    group.add_argument("--float32-blocks", type=int, default=ENTRY_FLOW_BLOCKS, metavar="N",
                       help=f"with bf16: run the first N residual blocks in float32 (default {ENTRY_FLOW_BLOCKS}, "
                            "Xception's entry flow)")


def export(keras_encoder, folder: str | Path, weights: str = DEFAULT_WEIGHTS, precision: str = DEFAULT_PRECISION,
           float32_blocks: int = ENTRY_FLOW_BLOCKS) -> dict:
    """Write `keras_encoder` (an encoder.KerasEncoder) into `folder`: the graph, and its weights in parts.

    `precision` bf16 runs the network in bfloat16 where the CPU computes it natively, except its first
    `float32_blocks` residual blocks (Xception's entry flow is 3), which stay in float32.
    Returns the entry for config.json's encoder.exported. Each file is written in a temporary
    folder beside it and moved in whole; the sha256 that config.json then records ties them together.
    """
    import nncf
    import openvino as ov

    if weights not in WEIGHT_FORMATS or precision not in PRECISIONS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS} and precision one of {PRECISIONS}")
    folder = Path(folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
        keras_encoder.export_saved_model(f"{tmp}/saved_model")
        converted = ov.convert_model(f"{tmp}/saved_model")
        # the graph file records where it was converted from: a temporary path, which made every
        # export's SHA-256 (and so its feature-cache key) differ for the same weights
        converted.set_rt_info("saved_model", ["conversion_parameters", "input_model"])
        if weights == "int8":
            converted = nncf.compress_weights(converted, mode=nncf.CompressWeightsMode.INT8_ASYM)
        ov.save_model(converted, f"{tmp}/{ENCODER_GRAPH_FILE}", compress_to_fp16=weights == "float16")
        blob = Path(tmp, ENCODER_GRAPH_FILE).with_suffix(".bin").read_bytes()
        parts = [blob[i:i + ENCODER_PART_BYTES] for i in range(0, len(blob), ENCODER_PART_BYTES)]
        weight_files = encoder_weight_files(len(parts))
        for name, part in zip(weight_files, parts):
            Path(tmp, name).write_bytes(part)
        for old in folder.glob(ENCODER_WEIGHTS_PATTERN):  # parts of an earlier export
            old.unlink()
        for name in (ENCODER_GRAPH_FILE, *weight_files):
            shutil.move(f"{tmp}/{name}", folder / name)
    return {"runtime": RUNTIME, "weights": weights, "precision": precision, "pooling": keras_encoder.pooling,
            "float32_blocks": float32_blocks if precision == "bf16" else 0, "weight_files": weight_files,
            "sha256": sha256_of(*(folder / name for name in (ENCODER_GRAPH_FILE, *weight_files))),
            "openvino": ov.get_version().split("-")[0], "nncf": nncf.__version__}

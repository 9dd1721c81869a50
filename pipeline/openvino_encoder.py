"""The backbone exported for serving: OpenVINO IR, run by OpenVINO Runtime without TensorFlow.

Export (TensorFlow, OpenVINO and NNCF: requirements-train.txt) takes the Keras Xception with its
preprocessing folded in (uint8 pixels in, pooled features out), converts it to OpenVINO IR and
writes the weights in parts under 25 MB. Measured on Flickr8k against the float32 Keras encoder
(README, "Serving without TensorFlow"; paired bootstrap over the test images):

  * the default, float16 weights computed in float32: 0.74x Keras' time, 99.2% of the captions
    unchanged, the same BLEU-4 and CIDEr-D; the file is 41 MB instead of 83.
  * bfloat16 compute (where the CPU has it natively, else float32) is about twice as fast. Under
    a decoder trained on float32 features it changes 5-7% of the captions even with the first
    blocks kept in float32, and the interval does not rule out a loss of 0.005 CIDEr-D; under
    decoders trained on its own features (train.py --features-from exported, scst.py) it passes,
    which is what weights/ carries. So it is the choice of a training run, not the default here.
    int8 weights change 17% of the captions.
"""
import logging
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from .artifact import ENCODER_GRAPH_FILE, ENCODER_WEIGHTS_PATTERN, ArtifactError, exported_files, folder_file
from .encoder import PixelEncoder, cache_key
from .files import sha256_of

log = logging.getLogger(__name__)

RUNTIME = "openvino"
PRECISIONS = ("bf16", "f32")  # OpenVINO's inference precision hints that this encoder accepts
WEIGHT_FORMATS = ("float16", "float32", "int8")
# The measured choice (README, "Serving without TensorFlow"): the same captions as Keras float32
DEFAULT_WEIGHTS, DEFAULT_PRECISION = "float16", "f32"
ENTRY_FLOW_BLOCKS = 3  # Xception's first residual blocks, kept in float32 by the bfloat16 option
SHARD_BYTES = 20 * 2**20  # encoder.bin is stored in parts below the Hub's and git hosts' large-file limits


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


def cpu_computes_bf16() -> bool:
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOEncoder(PixelEncoder):
    """Features from a model folder's exported encoder (encoder.xml and its weights' parts).

    `exported`: the folder config's encoder.exported entry (what export() returned); the files
    must hash to its sha256, so a swapped or truncated file is refused, not silently served.
    """

    def __init__(self, folder: str | Path, exported: dict, backbone_fingerprint: str):
        import openvino as ov

        folder = Path(folder)
        paths = [folder_file(folder, name) for name in exported_files(exported)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise ArtifactError(f"{folder}: config.json names an exported encoder but {', '.join(missing)} "
                                "is missing")
        if sha256_of(*paths) != exported["sha256"]:
            raise ArtifactError(f"{folder}: {', '.join(p.name for p in paths)} do not match the sha256 in "
                                "config.json (corrupt, or from another export)")
        if exported["precision"] not in PRECISIONS:
            raise ArtifactError(f"{folder / 'config.json'}: encoder.exported.precision must be one of "
                                f"{PRECISIONS}, got {exported['precision']!r}")
        self.precision, float32_blocks = exported["precision"], exported.get("float32_blocks", 0)
        if self.precision == "bf16" and not cpu_computes_bf16():
            log.info("this CPU has no native bfloat16: the encoder runs in float32")
            self.precision, float32_blocks = "f32", 0
        self.fingerprint, self._sha256, self.weights = backbone_fingerprint, exported["sha256"], str(folder)
        self._exported = exported
        self.plan = f"{self.precision}, the first {float32_blocks} blocks in f32" if float32_blocks else self.precision
        self.name = f"openvino, {exported.get('weights', 'float32')} weights, {self.plan} compute"
        core = ov.Core()
        try:
            # the weights' parts joined in memory: OpenVINO copies them into its own layout at compile
            weights = ov.Tensor(np.concatenate([np.fromfile(p, np.uint8) for p in paths[1:]]))
            graph = paths[0].read_text(encoding="utf-8")
            stages = [(core.read_model(graph, weights), self.precision)]
            if float32_blocks:
                head, tail = split_after_block(core.read_model(graph, weights), stages[0][0], float32_blocks)
                stages = [(head, "f32"), (tail, self.precision)]
            self._requests = [core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                "INFERENCE_PRECISION_HINT": precision})
                              .create_infer_request() for model, precision in stages]
        except (RuntimeError, ValueError) as error:
            raise ArtifactError(f"{paths[0]} could not be compiled by OpenVINO: {error}") from None
        self._lock = threading.Lock()  # one infer request per stage: callers from several threads take turns

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            values = np.ascontiguousarray(pixels, np.uint8)
            for request in self._requests:
                values = request.infer([values])[0]
            return values.copy()

    def cache_key(self) -> str:
        return cache_key(runtime=RUNTIME, file=self._sha256, precision=self.plan)

    def spec(self) -> dict:
        return {"runtime": RUNTIME, "folder": str(Path(self.weights).resolve()), "exported": self._exported,
                "fingerprint": self.fingerprint}


def split_after_block(head, tail, blocks: int):
    """Cut one network (read twice: `head` and `tail`) after its `blocks`-th residual block.

    A residual block ends in an Add of two computed tensors (the Adds that fold batch norm add a
    constant). The head computes up to that Add; the tail takes its output as its input.
    """
    import openvino as ov

    def block_ends(model):
        return [op for op in model.get_ordered_ops() if op.get_type_name() == "Add" and
                all(i.get_source_output().get_node().get_type_name() != "Constant" for i in op.inputs())]

    ends = block_ends(head)
    if not 0 < blocks < len(ends):
        raise ValueError(f"cannot run the first {blocks} blocks apart: the network has {len(ends)} residual blocks")
    cut = ends[blocks - 1].output(0)
    head = ov.Model([cut], head.get_parameters(), "encoder_head")
    cut_in_tail = block_ends(tail)[blocks - 1].output(0)
    boundary = ov.opset13.parameter(cut.get_partial_shape(), cut.get_element_type(), name="block_output")
    for consumer in list(cut_in_tail.get_target_inputs()):
        consumer.replace_source_output(boundary.output(0))
    return head, ov.Model(tail.get_results(), [boundary], "encoder_tail")


def export(keras_encoder, folder: str | Path, weights: str = DEFAULT_WEIGHTS, precision: str = DEFAULT_PRECISION,
           float32_blocks: int = ENTRY_FLOW_BLOCKS) -> dict:
    """Write `keras_encoder` (an encoder.ImageEncoder) to folder/encoder.xml and encoder-*.bin.

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
        parts = [blob[i:i + SHARD_BYTES] for i in range(0, len(blob), SHARD_BYTES)]
        weight_files = [f"encoder-{i:05d}-of-{len(parts):05d}.bin" for i in range(1, len(parts) + 1)]
        for name, part in zip(weight_files, parts):
            Path(tmp, name).write_bytes(part)
        for old in folder.glob(ENCODER_WEIGHTS_PATTERN):  # parts of an earlier export
            old.unlink()
        for name in (ENCODER_GRAPH_FILE, *weight_files):
            shutil.move(f"{tmp}/{name}", folder / name)
    return {"runtime": RUNTIME, "weights": weights, "precision": precision,
            "float32_blocks": float32_blocks if precision == "bf16" else 0, "weight_files": weight_files,
            "sha256": sha256_of(*(folder / name for name in (ENCODER_GRAPH_FILE, *weight_files))),
            "openvino": ov.get_version().split("-")[0], "nncf": nncf.__version__}

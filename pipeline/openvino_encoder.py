"""The backbone exported for serving: OpenVINO IR, run by OpenVINO Runtime without TensorFlow.

Export (pipeline/openvino_export.py) takes the Keras Xception with its preprocessing folded in
(uint8 pixels in, pooled features out) and converts it to OpenVINO IR. Measured on Flickr8k against the float32 Keras encoder
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
import threading
from pathlib import Path

import numpy as np

from .encoder import PixelEncoder, cache_key

log = logging.getLogger(__name__)

RUNTIME = "openvino"
PRECISIONS = ("bf16", "f32")  # OpenVINO's inference precision hints that this encoder accepts


def cpu_computes_bf16() -> bool:
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_export(exported) -> None:
    """config.json's encoder.exported entry of an OpenVINO export (a pipeline.artifact.ConfigSection)."""
    if exported.get("precision", str) not in PRECISIONS:
        raise exported.error(f"precision must be one of {PRECISIONS}, got {exported.value['precision']!r}")
    if "float32_blocks" in exported.value:
        exported.get("float32_blocks")


class OpenVINOEncoder(PixelEncoder):
    """Features from an exported encoder's files: the graph (OpenVINO IR), then its weights' parts.

    `exported`: the model folder config's encoder.exported entry (what pipeline.openvino_export
    wrote); `files`: its files, already checked against the entry's sha256
    (pipeline.artifact.exported_encoder_files). A graph OpenVINO cannot compile is a ValueError.
    """

    def __init__(self, files: list[Path], exported: dict, backbone_fingerprint: str):
        import openvino as ov

        files = [Path(path) for path in files]
        self.precision, float32_blocks = exported["precision"], exported.get("float32_blocks", 0)
        if self.precision == "bf16" and not cpu_computes_bf16():
            log.info("this CPU has no native bfloat16: the encoder runs in float32")
            self.precision, float32_blocks = "f32", 0
        self.fingerprint, self._sha256, self.source = backbone_fingerprint, exported["sha256"], str(files[0].parent)
        self.pooling = exported.get("pooling", "avg")
        self._files, self._exported = files, exported
        self.plan = f"{self.precision}, the first {float32_blocks} blocks in f32" if float32_blocks else self.precision
        self.name = f"openvino, {exported.get('weights', 'float32')} weights, {self.plan} compute"
        core = ov.Core()
        try:
            # the weights' parts joined in memory: OpenVINO copies them into its own layout at compile
            weights = ov.Tensor(np.concatenate([np.fromfile(p, np.uint8) for p in files[1:]]))
            graph = files[0].read_text(encoding="utf-8")
            stages = [(core.read_model(graph, weights), self.precision)]
            if float32_blocks:
                head, tail = split_after_block(core.read_model(graph, weights), stages[0][0], float32_blocks)
                stages = [(head, "f32"), (tail, self.precision)]
            self._requests = [core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                "INFERENCE_PRECISION_HINT": precision})
                              .create_infer_request() for model, precision in stages]
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"{files[0]} could not be compiled by OpenVINO: {error}") from None
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
        return {"runtime": RUNTIME, "files": [str(path.resolve()) for path in self._files],
                "exported": self._exported, "fingerprint": self.fingerprint}

    @classmethod
    def from_spec(cls, spec: dict) -> "OpenVINOEncoder":
        return cls(spec["files"], spec["exported"], spec["fingerprint"])


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

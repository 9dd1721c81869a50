"""The encoder runtimes, by name: how each builds the backbone, and what a model folder says of one.

  keras     the Keras Xception (TensorFlow): what training extracts features with (pipeline/encoder.py)
  openvino  the backbone exported into a model folder, run without TensorFlow (pipeline/openvino_encoder.py)

A PixelEncoder's spec() names its runtime, so another process (a Ray actor) rebuilds it with
encoder_from_spec. Adding a runtime: its module (a PixelEncoder with from_spec, and for a
model folder's export, a check of config.json's encoder.exported entry) and one line here.
"""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import encoder, openvino_encoder
from .encoder import PixelEncoder


@dataclass(frozen=True)
class EncoderRuntime:
    """from_spec: the encoder again from its spec(); load_export: the encoder from a model folder's
    exported files (checked), its encoder.exported entry and the backbone's fingerprint, or None
    for a runtime that is not exported into folders; check_export: checks that entry (a
    pipeline.artifact.ConfigSection) before anything is loaded."""
    from_spec: Callable[[dict], PixelEncoder]
    load_export: Callable[[list[Path], dict, str], PixelEncoder] | None = None
    check_export: Callable[[object], None] | None = None


ENCODER_RUNTIMES = {
    encoder.RUNTIME: EncoderRuntime(encoder.KerasEncoder.from_spec),
    openvino_encoder.RUNTIME: EncoderRuntime(openvino_encoder.OpenVINOEncoder.from_spec,
                                             openvino_encoder.OpenVINOEncoder, openvino_encoder.check_export),
}
EXPORTED_RUNTIMES = tuple(name for name, runtime in ENCODER_RUNTIMES.items() if runtime.load_export is not None)


def encoder_from_spec(spec: dict) -> PixelEncoder:
    """The encoder that PixelEncoder.spec described, in this process."""
    return ENCODER_RUNTIMES[spec["runtime"]].from_spec(spec)

"""Export a model folder's image encoder for serving without TensorFlow (OpenVINO IR).

  python export_encoder.py --model weights

Builds the Keras Xception the decoder was trained on (its fingerprint must match config.json),
writes the OpenVINO graph and its weights in parts (pipeline/artifact.py) into the folder and
records them in config.json. The app and evaluate.py then use it by default. train.py does this
itself at the end of a run. Needs requirements-train.txt (TensorFlow, OpenVINO, NNCF).

The defaults are the measured choice (docs/serving.md): float16 weights
computed in float32, which caption as the Keras encoder does. bfloat16 is about twice as fast
where the CPU computes it natively; it passes that bar only for decoders trained on its own
features (train.py --features-from exported --precision bf16), as weights/ is.
"""
import argparse
import logging
from pathlib import Path

from pipeline.artifact import ArtifactError, read_config, write_config
from pipeline.captioner import BackboneError, keras_encoder
from pipeline.cli import add_backbone_argument, add_model_folder_argument, run_main
from pipeline.openvino_export import add_export_arguments

log = logging.getLogger("export_encoder")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_folder_argument(p, "weights", "the local model folder to export into", former="--weights")
    add_backbone_argument(p)
    add_export_arguments(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with run_main(ArtifactError, BackboneError):
        folder = Path(args.model)
        config = read_config(folder)
        from pipeline.openvino_export import export

        encoder = keras_encoder(folder, config, args.backbone_weights)
        if encoder.fingerprint != config["encoder"]["weights_fingerprint"]:
            raise SystemExit(f"error: the backbone {encoder.source} (fingerprint {encoder.fingerprint}) is not the "
                             f"one the decoder in {folder} was trained on ({config['encoder']['weights_fingerprint']})")
        config["encoder"]["exported"] = export(encoder, folder, args.weight_format, args.precision,
                                              args.float32_blocks)
        write_config(folder, config)
        log.info("exported the encoder into %s: %s", folder, config["encoder"]["exported"])


if __name__ == "__main__":
    main()

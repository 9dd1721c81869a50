"""Export a model folder's image encoder for serving without TensorFlow (OpenVINO IR).

  python export_encoder.py --weights weights

Builds the Keras Xception the decoder was trained on (its fingerprint must match config.json),
writes encoder.xml and the weights in parts under 25 MB (encoder-*.bin) into the folder and
records them in config.json. The app and evaluate.py then use it by default. train.py does this
itself at the end of a run. Needs requirements-train.txt (TensorFlow, OpenVINO, NNCF).

The defaults are the measured choice (README, "Serving without TensorFlow"): float16 weights
computed in float32, which caption as the Keras encoder does. bfloat16 is about twice as fast
where the CPU computes it natively; it passes that bar only for decoders trained on its own
features (train.py --features-from exported --precision bf16), as weights/ is.
"""
import argparse
import logging
from pathlib import Path

from pipeline.artifact import ArtifactError, read_config, write_config
from pipeline.encoder import BACKBONE_WEIGHTS_ENV
from pipeline.openvino_encoder import add_export_arguments
from pipeline.logs import log_to_stderr

log = logging.getLogger("export_encoder")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", type=Path, help="model folder (default: weights)")
    p.add_argument("--backbone-weights", help=f"Xception weights: 'imagenet', or a local .weights.h5 file; "
                   f"default ${BACKBONE_WEIGHTS_ENV}, else imagenet")
    add_export_arguments(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    log_to_stderr()
    try:
        config = read_config(args.weights)
    except ArtifactError as error:
        raise SystemExit(f"error: {error}") from None
    from pipeline.encoder import ImageEncoder
    from pipeline.openvino_encoder import export

    encoder = ImageEncoder(args.backbone_weights)
    if encoder.fingerprint != config["encoder"]["weights_fingerprint"]:
        raise SystemExit(f"error: the backbone {encoder.weights} (fingerprint {encoder.fingerprint}) is not the one "
                         f"the decoder in {args.weights} was trained on ({config['encoder']['weights_fingerprint']})")
    config["encoder"]["exported"] = export(encoder, args.weights, args.weight_format, args.precision,
                                          args.float32_blocks)
    write_config(args.weights, config)
    log.info("exported the encoder into %s: %s", args.weights, config["encoder"]["exported"])


if __name__ == "__main__":
    main()

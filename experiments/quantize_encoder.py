"""The Xception encoder past float32: LiteRT/TFLite exports and bfloat16.

  python experiments/quantize_encoder.py --data ../shared/flickr8k --model weights --json q.json

Variants: the float32 tf.function (the library's encoder, the baseline), a TFLite export in
float32 (to tell the runtime's effect from the number format's), TFLite with float16 weights,
TFLite with dynamic-range int8 weights, and Keras' 'mixed_bfloat16' policy (bfloat16 compute,
float32 weights) in a tf.function. For each: latency at batch 1 (p50), images/s at batch 32,
and on the test images the share of beam-3 captions identical to the float32 encoder's (from
its feature cache) and BLEU-4 against the references (pipeline.metrics, Python tokenisation).
A variant would be adopted only with at least 97% identical captions and no drop in BLEU-4.
Speed-ups are against the first variant given (default float32). Each variant is timed alone in
a fresh process (in one process the runtimes' thread pools slow each other down), on the first
test images. The machine should be otherwise idle.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402,F401  (first: it sets NumPy's and TensorFlow's environment)
from pipeline.cli import add_backbone_argument, add_beam_argument, add_cache_argument, add_model_folder_argument  # noqa: E402

AGREEMENT_NEEDED = 0.97
VARIANTS = ("float32", "tflite-float32", "tflite-float16", "tflite-int8-dynamic", "bfloat16")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "flickr8k"), help="Flickr8k folder")
    add_model_folder_argument(p, str(ROOT / "weights"), "the model folder", former="--weights")
    add_backbone_argument(p)
    add_cache_argument(p)
    p.add_argument("--limit-images", type=int, help="only the first N test images (default: all 1000)")
    p.add_argument("--latency-images", type=int, default=30, help="images timed at batch 1 (default 30)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    add_beam_argument(p)
    p.add_argument("--json", metavar="OUT", help="write the results here")
    p.add_argument("--time-variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: time one, alone
    p.add_argument("--model-file", help=argparse.SUPPRESS)
    return p.parse_args(argv)


class TFLiteEncoder:
    def __init__(self, content: bytes):
        import warnings

        import tensorflow as tf
        warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated")  # ai_edge_litert is the same runtime
        self.size = len(content)
        self.interpreter = tf.lite.Interpreter(model_content=content, num_threads=os.cpu_count())
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = None

    def __call__(self, pixels):
        if self.batch != len(pixels):
            self.interpreter.resize_tensor_input(self.input, pixels.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        self.interpreter.set_tensor(self.input, pixels)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def tflite_export(encoder, kind: str) -> bytes:
    """The encoder (uint8 pixels in, Xception's preprocessing inside) as a TFLite flatbuffer.

    Keras 3 variables are not frozen by from_concrete_functions, so it goes through a SavedModel.
    """
    import tempfile

    import tensorflow as tf
    with tempfile.TemporaryDirectory() as folder:
        encoder.export_saved_model(folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if kind in ("float16", "int8-dynamic"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: int8 weights, dynamic-range activations
        if kind == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def bfloat16_encoder(weights: str):
    import keras
    import tensorflow as tf
    from pipeline.encoder import IMAGE_SIZE
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = keras.applications.Xception(include_top=False, pooling="avg", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                            weights=None if weights == "none" else weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    preprocess = keras.applications.xception.preprocess_input

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8)])
    def encode(pixels):
        return tf.cast(model(preprocess(tf.cast(pixels, tf.float32)), training=False), tf.float32)

    return lambda pixels: encode(pixels).numpy()


def build(variant: str, encoder, model_file: Path | None = None):
    """The variant's encode(pixels) -> features. `encoder`: an KerasEncoder or backbone weights to
    build one from; TFLite variants are converted from it, or read from model_file when it exists."""
    from pipeline.encoder import KerasEncoder
    if variant == "bfloat16":
        return bfloat16_encoder(getattr(encoder, "weights", encoder))
    if variant.startswith("tflite") and model_file is not None and model_file.is_file():
        return TFLiteEncoder(model_file.read_bytes())
    encoder = encoder if isinstance(encoder, KerasEncoder) else KerasEncoder(encoder)
    if variant == "float32":
        return encoder.encode_pixels
    content = tflite_export(encoder, variant.removeprefix("tflite-"))
    if model_file is not None:
        model_file.write_bytes(content)
    return TFLiteEncoder(content)


def time_variant(args) -> dict:
    """Latency at batch 1 and images/s at batch 32, in this fresh process (the child of main)."""
    import numpy as np
    from pipeline.formats import load_dataset
    from pipeline.encoder import IMAGE_SIZE, resolve_backbone_weights
    from pipeline.images import load_image, to_model_input

    dataset = load_dataset(args.data)
    names = dataset.split("test")[:max(args.latency_images, 32)]
    pixels = np.stack([to_model_input(load_image(dataset.image_path(n)), IMAGE_SIZE) for n in names])
    model_file = Path(args.model_file) if args.model_file else None
    encode = build(args.time_variant, resolve_backbone_weights(args.backbone_weights), model_file)
    batch = pixels[np.arange(32) % len(pixels)]
    encode(pixels[:1]), encode(batch)  # warm-up for both shapes
    times = []
    for _ in range(2):
        for i in range(args.latency_images):
            start = time.perf_counter()
            encode(pixels[i % len(pixels)][None])
            times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(2):
        encode(batch)
    return {"batch1_p50_ms": round(float(np.median(times)) * 1000, 1),
            "batch32_images_per_second": round(64 / (time.perf_counter() - start), 1)}


def main(argv=None):
    args = parse_args(argv)
    if args.time_variant:
        print("TIMING " + json.dumps(time_variant(args)))
        return None
    import subprocess
    import tempfile

    import numpy as np
    from tqdm import tqdm

    from pipeline import Captioner
    from pipeline.formats import load_dataset
    from pipeline.encoder import IMAGE_SIZE
    from pipeline.feature_cache import extract_features
    from pipeline.images import load_image, to_model_input
    from pipeline.metrics import caption_metrics

    dataset = load_dataset(args.data)
    names = dataset.split("test")[:args.limit_images]
    captioner = Captioner.from_pretrained(args.model, args.backbone_weights, encoder="keras")
    encoder = captioner.image_encoder
    references = {n: dataset.captions[n] for n in names}
    pixels = np.stack([to_model_input(load_image(dataset.image_path(n)), IMAGE_SIZE)
                       for n in tqdm(names, desc="loading images", unit="img")])

    def captions(features):
        out = []
        for i in range(0, len(features), 100):
            out += [d.caption for d in captioner.describe_features(features[i:i + 100], args.beam_size, 1)]
        return dict(zip(names, out))

    # the float32 encoder's captions: from its feature cache, as evaluate.py makes them
    baseline_features = extract_features(encoder, dataset.image_dir, names, args.cache_dir)
    baseline = captions(baseline_features)
    baseline_bleu = caption_metrics(references, baseline, use_java=False, resamples=10)["bleu_4"]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:  # quality: every test image through the variant, here
            print(f"{variant}: building and encoding {len(names)} images ...", file=sys.stderr, flush=True)
            model_file = Path(folder) / f"{variant}.tflite" if variant.startswith("tflite") else None
            start = time.perf_counter()
            encode = build(variant, encoder, model_file)
            row = results[variant] = {"build_seconds": round(time.perf_counter() - start, 1)}
            if model_file:
                row["model_mb"] = round(model_file.stat().st_size / 2**20, 1)
            features = np.concatenate([encode(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
            del encode
            predicted = captions(features)
            same = np.mean([predicted[n] == baseline[n] for n in names])
            bleu = caption_metrics(references, predicted, use_java=False, resamples=10)["bleu_4"]
            cosine = np.sum(features * baseline_features, 1) / (
                np.linalg.norm(features, axis=1) * np.linalg.norm(baseline_features, axis=1) + 1e-12)
            row.update(identical_captions=round(float(same), 4), bleu_4=round(bleu, 4),
                       min_feature_cosine=round(float(cosine.min()), 5),
                       adoptable=bool(same >= AGREEMENT_NEEDED and bleu >= baseline_bleu))
        for variant in args.variants:  # speed: each variant alone in a fresh process, one after another
            print(f"{variant}: timing ...", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--data", args.data, "--time-variant", variant,
                       "--latency-images", str(args.latency_images),
                       "--model-file", str(Path(folder) / f"{variant}.tflite")]
            if args.backbone_weights:
                command += ["--backbone-weights", args.backbone_weights]
            child = subprocess.run(command, capture_output=True, text=True, check=True)
            results[variant].update(json.loads(child.stdout.split("TIMING ")[-1]))
    base = results[args.variants[0]]
    for variant, row in results.items():
        row.update(batch1_speedup=round(base["batch1_p50_ms"] / row["batch1_p50_ms"], 2),
                   batch32_speedup=round(row["batch32_images_per_second"] / base["batch32_images_per_second"], 2))
        print(variant, json.dumps(row), file=sys.stderr, flush=True)

    report = {"images": len(names), "beam_size": args.beam_size, "baseline_bleu_4": round(baseline_bleu, 4),
              "agreement_needed": AGREEMENT_NEEDED, "cpu_cores": os.cpu_count(), "variants": results}
    columns = ("batch1_p50_ms", "batch1_speedup", "batch32_images_per_second", "batch32_speedup",
               "identical_captions", "bleu_4", "adoptable")
    print(f"{len(names)} test images, beam {args.beam_size}; float32 BLEU-4 {baseline_bleu:.4f}\n")
    print("| Variant | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for variant, row in results.items():
        print(f"| {variant} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()

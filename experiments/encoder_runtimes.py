"""Which runtime serves the exported encoder: OpenVINO, ONNX Runtime and LiteRT side by side.

  pip install tf2onnx==1.17.0 onnxruntime==1.32.0 ai-edge-litert==2.3.0   # besides requirements-train.txt
  python experiments/encoder_runtimes.py --data ../shared/flickr8k --json experiments/encoder_runtimes.json

Exports the Keras Xception (float32, preprocessing folded in: uint8 pixels in, pooled features
out) once to each format, then, for Keras and each runtime, in fresh processes that take turns
(--rounds): latency at batch 1 (p50 over --images test images), the process's peak resident
memory, and the features' largest relative difference from Keras' on the same images. Install
size is what the runtime's installed distributions hold on disk (for Keras: TensorFlow and Keras).
Timings are medians over the rounds; the machine should be otherwise idle.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.cli import add_backbone_argument  # noqa: E402

RUNTIMES = {"keras": ("tensorflow", "keras"), "openvino": ("openvino",), "onnxruntime": ("onnxruntime",),
            "litert": ("ai-edge-litert",)}  # runtime -> its installed distributions
MODEL_FILES = {"keras": [], "openvino": ["encoder.xml", "encoder.bin"], "onnxruntime": ["encoder.onnx"],
               "litert": ["encoder.tflite"]}

CHILD = r"""
import json, os, sys, time
import numpy as np
runtime, model, pixels_file = sys.argv[1:4]
pixels = np.load(pixels_file)
if runtime == "keras":
    sys.path.insert(0, os.getcwd())
    from pipeline.encoder import KerasEncoder
    encode = KerasEncoder(model).encode_pixels
elif runtime == "openvino":
    import openvino as ov
    request = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    encode = lambda x: request.infer([x])[0].copy()
elif runtime == "onnxruntime":
    import onnxruntime as ort
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    encode = lambda x: session.run(None, {name: x})[0]
else:
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=model, num_threads=os.cpu_count())
    entry, exit_ = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(entry, (1, *pixels.shape[1:]))
    interpreter.allocate_tensors()
    def encode(x):
        interpreter.set_tensor(entry, x)
        interpreter.invoke()
        return interpreter.get_tensor(exit_).copy()
features = np.concatenate([encode(pixels[i:i + 1]) for i in range(len(pixels))])  # also the warm-up
seconds = []
for i in range(len(pixels)):
    start = time.perf_counter()
    encode(pixels[i:i + 1])
    seconds.append(time.perf_counter() - start)
np.save(sys.argv[4], features)
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print("RESULT " + json.dumps({"batch1_p50_ms": float(np.median(seconds)) * 1000,
                              "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}))
"""


def installed_mb(distributions) -> float:
    total = 0
    for name in distributions:
        dist = metadata.distribution(name)
        total += sum((Path(dist.locate_file(f))).stat().st_size for f in dist.files or []
                     if Path(dist.locate_file(f)).is_file())
    return round(total / 2**20, 1)


def export_all(encoder, folder: Path) -> dict:
    """The Keras encoder in each runtime's format; returns runtime -> model path."""
    import openvino as ov
    import tensorflow as tf

    encoder.export_saved_model(folder / "saved_model")
    ov.save_model(ov.convert_model(str(folder / "saved_model")), str(folder / "encoder.xml"), compress_to_fp16=False)
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(folder / "saved_model"),
                    "--signature_def", "serve", "--opset", "17", "--output", str(folder / "encoder.onnx")],
                   check=True, capture_output=True)
    (folder / "encoder.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved_model"))
                                            .convert())
    return {"keras": encoder.source, "openvino": str(folder / "encoder.xml"),
            "onnxruntime": str(folder / "encoder.onnx"), "litert": str(folder / "encoder.tflite")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "flickr8k"), help="Flickr8k folder")
    add_backbone_argument(p)
    p.add_argument("--images", type=int, default=30, help="test images timed at batch 1 (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="turns each runtime takes (default 3)")
    p.add_argument("--json", metavar="OUT", help="write the results here")
    args = p.parse_args(argv)
    import numpy as np

    from pipeline.formats import load_dataset
    from pipeline.encoder import IMAGE_SIZE, KerasEncoder
    from pipeline.images import load_image, to_model_input

    dataset = load_dataset(args.data)
    pixels = np.stack([to_model_input(load_image(dataset.image_path(n)), IMAGE_SIZE)
                       for n in dataset.split("test")[:args.images]])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = export_all(KerasEncoder(args.backbone_weights), tmp)
        np.save(tmp / "pixels.npy", pixels)
        runs = {runtime: [] for runtime in RUNTIMES}
        for _ in range(args.rounds):
            for runtime in RUNTIMES:
                print(f"{runtime} ...", file=sys.stderr, flush=True)
                child = subprocess.run([sys.executable, "-c", CHILD, runtime, models[runtime], str(tmp / "pixels.npy"),
                                        str(tmp / f"{runtime}.npy")], cwd=ROOT, capture_output=True, text=True,
                                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=True)
                runs[runtime].append(json.loads(child.stdout.split("RESULT ")[-1]))
        keras_features = np.load(tmp / "keras.npy")
        results = {}
        for runtime, rounds in runs.items():
            features = np.load(tmp / f"{runtime}.npy")
            difference = np.linalg.norm(features - keras_features, axis=1) / np.linalg.norm(keras_features, axis=1)
            results[runtime] = {
                "batch1_p50_ms": round(float(np.median([r["batch1_p50_ms"] for r in rounds])), 1),
                "peak_rss_mb": round(float(np.median([r["peak_rss_mb"] for r in rounds])), 1),
                "max_relative_difference": float(difference.max()),
                "installed_mb": installed_mb(RUNTIMES[runtime]),
                "model_mb": round(sum((tmp / name).stat().st_size for name in MODEL_FILES[runtime]) / 2**20, 1)}
    keras_ms = results["keras"]["batch1_p50_ms"]
    for row in results.values():
        row["time_vs_keras"] = round(row["batch1_p50_ms"] / keras_ms, 2)
    columns = ("batch1_p50_ms", "time_vs_keras", "peak_rss_mb", "installed_mb", "model_mb", "max_relative_difference")
    print(f"{args.images} test images at batch 1, {args.rounds} rounds, {os.cpu_count()} cores\n")
    print("| runtime | " + " | ".join(columns) + " |\n" + "| --- " * (len(columns) + 1) + "|")
    for runtime, row in results.items():
        print(f"| {runtime} | " + " | ".join(f"{row[c]:.2g}" if c == "max_relative_difference" else str(row[c])
                                          for c in columns) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": args.images, "rounds": args.rounds, "runtimes": results},
                                              indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

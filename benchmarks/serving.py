"""Serving: the exported encoder's path against the Keras path, each in fresh processes, the app's
start-up and memory on each, and the installed size without TensorFlow against with it.

The fresh processes run this module: `python -m benchmarks.serving app|paths ARGS` prints one
line 'BENCH ' + JSON. It imports only the standard library before the work it times.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import ROOT

MARK = "BENCH "  # starts the one line of a fresh process's stdout that holds its JSON


def run_child(role: str, *argv, backbone: str) -> dict:
    """Run `role` of this module in a fresh Python process and return the JSON it prints after MARK."""
    env = dict(os.environ, CAPTION_BACKBONE_WEIGHTS=backbone, PYTHONUNBUFFERED="1")
    env.pop("CAPTION_MODEL_REPO", None)  # the local model folder, not a Hub download
    result = subprocess.run([sys.executable, "-m", "benchmarks.serving", role, *map(str, argv)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARK)]
    if result.returncode or not lines:
        raise RuntimeError(f"the benchmark process failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


# --- in the fresh processes ------------------------------------------------------------------------

def app_first_caption(model_folder: str, image: str, beam: str, encoder: str) -> dict:
    """The app's start-up in this process: load it, caption `image` once, and read the memory."""
    model_folder, beam = Path(model_folder), int(beam)
    try:
        import app
        _, captioner = app.start(model_folder, encoder=encoder)  # (the Gradio page, the captioner)
        via = "app.start"
    except ImportError as error:  # the app or Gradio is not there: load the model the way the app does
        from pipeline import Captioner
        captioner, via = Captioner.from_pretrained(model_folder, encoder=encoder), f"Captioner.from_pretrained ({error})"
    loaded = time.time()
    captioner.describe(Path(image).read_bytes(), beam)  # what the app's handler runs
    done = time.time()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)

    def kb(key):
        return int(status[key].split()[0])
    return {"via": via, "loaded": loaded, "done": done, "first_caption_ms": (done - loaded) * 1000,
            "peak_rss_kb": kb("VmHWM"), "rss_kb": kb("VmRSS")}


def path_latency(model_folder: str, encoder: str, beam: str, *paths: str) -> dict:
    """Encoder and end-to-end p50 (ms, not rounded) of one serving path in this process."""
    from pipeline import Captioner
    from pipeline.encoder import IMAGE_SIZE
    from pipeline.images import load_image, to_model_input

    from .timing import percentile_ms, timed
    beam = int(beam)
    captioner = Captioner.from_pretrained(model_folder, encoder=encoder)
    pixels = [to_model_input(load_image(p), IMAGE_SIZE)[None] for p in paths]
    for i in range(5):  # warm-up, as a long-running app would be
        captioner.caption(paths[i % len(paths)], beam)
    return {"encoder_batch1_p50_ms": percentile_ms(timed(captioner.image_encoder.encode_pixels, pixels), 50, None),
            "end_to_end_p50_ms": percentile_ms(timed(lambda p: captioner.caption(p, beam), paths), 50, None)}


ROLES = {"app": app_first_caption, "paths": path_latency}


def main(argv=None):
    role, *args = sys.argv[1:] if argv is None else argv
    print(MARK + json.dumps(ROLES[role](*args)))


# --- in bench.py's process ---------------------------------------------------------------------------

def bench_app(model_folder: str, backbone: str, image, beam: int, encoder: str = "keras") -> dict:
    launched = time.time()
    child = run_child("app", Path(model_folder).resolve(), image, beam, encoder, backbone=backbone)
    return {"app_loaded_via": child["via"],
            "app_startup_seconds": round(child["done"] - launched, 2),
            "app_load_seconds": round(child["loaded"] - launched, 2),
            "app_first_caption_ms": round(child["first_caption_ms"], 1),
            "app_peak_rss_mb": round(child["peak_rss_kb"] / 1024, 1),
            "app_rss_mb": round(child["rss_kb"] / 1024, 1)}


def bench_serving(model_folder: str, backbone: str, paths, image, beam: int, rounds: int,
                  baseline_folder: str | None = None) -> dict:
    """The exported encoder's path against the Keras path: each in fresh processes, taking turns, so
    that neither runtime's threads slow the other and a busy spell of a shared machine hits both.
    With `baseline_folder` (bench.py --baseline-model), that folder's exported path takes its turn
    too: the app's path against another model's, such as the one it replaces. The app itself too:
    start-up, first caption and memory of each, medians over the rounds."""
    import numpy as np
    paths_of = {"keras": (model_folder, "keras"), "exported": (model_folder, "exported")}
    if baseline_folder:
        paths_of["baseline_exported"] = (baseline_folder, "exported")
    runs = {name: [] for name in paths_of}
    for _ in range(rounds):
        for name, (folder, encoder) in paths_of.items():
            runs[name].append(run_child("paths", folder, encoder, beam, *paths, backbone=backbone))
    out = {f"{name}_{key}": round(float(np.median([r[key] for r in results])), 2)
           for name, results in runs.items() for key in ("encoder_batch1_p50_ms", "end_to_end_p50_ms")}
    out["exported_end_to_end_ratio"] = round(out["exported_end_to_end_p50_ms"] / out["keras_end_to_end_p50_ms"], 2)
    if baseline_folder:
        out["baseline_model"] = str(baseline_folder)
        out["baseline_end_to_end_ratio"] = round(
            out["exported_end_to_end_p50_ms"] / out["baseline_exported_end_to_end_p50_ms"], 2)
    apps = {"keras": [], "exported": []}
    for _ in range(rounds):
        for encoder in apps:
            apps[encoder].append(bench_app(model_folder, backbone, image, beam, encoder))

    def medians(results):  # numbers: the median over the rounds; the rest (how it loaded): the first
        return {key: round(float(np.median([r[key] for r in results])), 2) if isinstance(value, (int, float))
                else value for key, value in results[0].items()}

    out.update(medians(apps["keras"]))  # the app_* figures of the table are the Keras path's
    out.update({f"exported_{key}": value for key, value in medians(apps["exported"]).items()})
    out["exported_startup_ratio"] = round(out["exported_app_startup_seconds"] / out["app_startup_seconds"], 2)
    out["exported_peak_rss_ratio"] = round(out["exported_app_peak_rss_mb"] / out["app_peak_rss_mb"], 2)
    return out


def venv_megabytes(requirements: list[str], folder: Path) -> float:
    """Size on disk of a fresh virtual environment with `requirements` installed (pip's own files included)."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *requirements], check=True)
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20, 1)


def bench_install_size() -> dict:
    """requirements.txt against what the Space installed before: the same plus TensorFlow and Keras."""
    import tempfile
    train = (ROOT / "requirements-train.txt").read_text().splitlines()
    tensorflow = [line for line in train if line.startswith(("tensorflow==", "keras=="))]
    with tempfile.TemporaryDirectory() as tmp:
        ours = venv_megabytes(["-r", str(ROOT / "requirements.txt")], Path(tmp, "exported"))
        keras_path = venv_megabytes(["-r", str(ROOT / "requirements.txt"), *tensorflow], Path(tmp, "keras"))
    return {"install_mb": ours, "keras_install_mb": keras_path, "install_size_ratio": round(ours / keras_path, 2)}


if __name__ == "__main__":
    main()

"""The targets, the keys every report holds, the table bench.py prints, and the machine it ran on."""
import json
import os
import platform
from pathlib import Path

# (key, target, "max" if the value must stay at or below it, "min" if at or above)
TARGETS = {
    "encoder_batch1_p50_ms": (65.0, "max"),
    "decoder_beam3_p50_ms": (8.0, "max"),
    "end_to_end_p50_ms": (80.0, "max"),
    "end_to_end_speedup": (7.0, "min"),
    "train_speedup": (5.0, "min"),
    "app_peak_rss_mb": (1536.0, "max"),
    # the exported encoder's path against the Keras path, measured side by side
    "exported_end_to_end_ratio": (0.6, "max"),
    "exported_startup_ratio": (0.4, "max"),
    "exported_peak_rss_ratio": (0.5, "max"),
    # the app's path (exported) in its Space's budget, and against the model it replaces (--baseline-model)
    "exported_app_peak_rss_mb": (600.0, "max"),
    "baseline_end_to_end_ratio": (1.15, "max"),
    "install_size_ratio": (0.4, "max"),
    # beam-3 decoding (the whole decoder, ensemble included) against one float32 Keras encoder pass
    "decoder_to_encoder_ratio": (0.25, "max"),
}

# Every measurement bench.py writes (tests check the JSON holds them all).
REPORT_KEYS = (
    "image_load_p50_ms", "encoder_batch1_p50_ms", "encoder_batch1_p90_ms", "encoder_batch32_images_per_second",
    "decoder_greedy_p50_ms", "decoder_greedy_p90_ms", "decoder_beam3_p50_ms", "decoder_beam3_p90_ms",
    "decoder_beam5_p50_ms", "decoder_beam5_p90_ms", "decoder_beam3_mean_words", "decoder_to_encoder_ratio",
    "end_to_end_p50_ms", "end_to_end_p90_ms",
    "original_encoder_p50_ms", "original_decoder_p50_ms", "original_end_to_end_p50_ms",
    "original_end_to_end_p90_ms", "original_mean_words", "original_matches_greedy",
    "end_to_end_same_images_p50_ms", "end_to_end_speedup",
    "train_captions", "train_words", "train_captions_per_second", "train_words_per_second",
    "original_train_samples", "original_train_captions_per_second", "original_train_words_per_second",
    "train_speedup",
    "caption_batch_images_per_second", "caption_one_by_one_images_per_second", "batching_speedup",
    "app_loaded_via", "app_startup_seconds", "app_load_seconds", "app_first_caption_ms",
    "app_peak_rss_mb", "app_rss_mb",
    "keras_encoder_batch1_p50_ms", "exported_encoder_batch1_p50_ms", "keras_end_to_end_p50_ms",
    "exported_end_to_end_p50_ms", "exported_end_to_end_ratio", "exported_app_startup_seconds",
    "exported_app_first_caption_ms", "exported_app_peak_rss_mb", "exported_startup_ratio", "exported_peak_rss_ratio",
)
# with --install-size only
INSTALL_KEYS = ("install_mb", "keras_install_mb", "install_size_ratio")
# with --baseline-model only
BASELINE_KEYS = ("baseline_exported_encoder_batch1_p50_ms", "baseline_exported_end_to_end_p50_ms",
                 "baseline_end_to_end_ratio")


def cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or None


def device(**more) -> dict:
    """The report's "device": the machine, its processor and cores, and `more` (library versions)."""
    return {"machine": platform.machine(), "processor": cpu_model(), "cpu_cores": os.cpu_count(), **more}


def write_json(path, report: dict):
    """Write `report` to `path` (--json) if one is given."""
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def check_targets(report: dict) -> dict:
    out = {}
    for key, (target, kind) in TARGETS.items():
        value = report.get(key)
        met = None if value is None else (value <= target if kind == "max" else value >= target)
        out[key] = {"value": value, "target": target, "kind": kind, "met": met}
    return out


ROWS = [  # (label, key, unit)
    ("Image load + resize, batch 1, p50", "image_load_p50_ms", "ms"),
    ("Encoder, batch 1, p50 / p90", ("encoder_batch1_p50_ms", "encoder_batch1_p90_ms"), "ms"),
    ("Encoder, batch 32", "encoder_batch32_images_per_second", "images/s"),
    ("Decoder greedy, p50 / p90", ("decoder_greedy_p50_ms", "decoder_greedy_p90_ms"), "ms"),
    ("Decoder beam 3, p50 / p90", ("decoder_beam3_p50_ms", "decoder_beam3_p90_ms"), "ms"),
    ("Decoder beam 5, p50 / p90", ("decoder_beam5_p50_ms", "decoder_beam5_p90_ms"), "ms"),
    ("Decoder beam 3 / Keras encoder batch 1 (p50s)", "decoder_to_encoder_ratio", "x"),
    ("End to end (Captioner.caption), p50 / p90", ("end_to_end_p50_ms", "end_to_end_p90_ms"), "ms"),
    ("Original: Xception predict, p50", "original_encoder_p50_ms", "ms"),
    ("Original: predict per word, p50", "original_decoder_p50_ms", "ms"),
    ("Original: end to end, p50 / p90", ("original_end_to_end_p50_ms", "original_end_to_end_p90_ms"), "ms"),
    ("End-to-end speed-up over the original", "end_to_end_speedup", "x"),
    ("Training, ours", ("train_captions_per_second", "train_words_per_second"), "captions/s / words/s"),
    ("Training, original generator", ("original_train_captions_per_second", "original_train_words_per_second"),
     "captions/s / words/s"),
    ("Training speed-up", "train_speedup", "x"),
    ("Batches of 32 / one by one", ("caption_batch_images_per_second", "caption_one_by_one_images_per_second"),
     "images/s"),
    ("App start-up to first caption", "app_startup_seconds", "s"),
    ("App peak resident memory", "app_peak_rss_mb", "MB"),
    ("Encoder batch 1 p50: Keras / exported", ("keras_encoder_batch1_p50_ms", "exported_encoder_batch1_p50_ms"), "ms"),
    ("End to end p50: Keras / exported", ("keras_end_to_end_p50_ms", "exported_end_to_end_p50_ms"), "ms"),
    ("End to end, exported / Keras", "exported_end_to_end_ratio", "x"),
    ("End to end p50: --baseline-model, exported", "baseline_exported_end_to_end_p50_ms", "ms"),
    ("End to end, exported / --baseline-model exported", "baseline_end_to_end_ratio", "x"),
    ("App start-up, exported (ratio to Keras)", ("exported_app_startup_seconds", "exported_startup_ratio"), "s / x"),
    ("App peak memory, exported", "exported_app_peak_rss_mb", "MB"),
    ("App peak memory, exported / Keras", "exported_peak_rss_ratio", "x"),
    ("Installed size: requirements.txt / with TensorFlow", ("install_mb", "keras_install_mb"), "MB"),
    ("Installed size, exported / Keras", "install_size_ratio", "x"),
]


def table(report: dict) -> str:
    lines = ["| Measurement | Value | Target |", "| --- | --- | --- |"]
    for label, keys, unit in ROWS:
        keys = keys if isinstance(keys, tuple) else (keys,)
        value = " / ".join("n/a" if report.get(k) is None else f"{report[k]:g}" for k in keys)
        target = next((report["targets"][k] for k in keys if k in report["targets"]), None)
        note = ""
        if target and target["met"] is not None:
            sign = "<=" if target["kind"] == "max" else ">="
            note = f"{sign} {target['target']:g} ({'met' if target['met'] else 'MISSED'})"
        lines.append(f"| {label} | {value} {unit} | {note} |")
    return "\n".join(lines)

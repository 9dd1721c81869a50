"""bench.py runs every measurement on a tiny model and writes them all; timings are never asserted."""
import json
import shutil
from pathlib import Path

import pytest

import bench
from benchmarks.report import BASELINE_KEYS, INSTALL_KEYS, REPORT_KEYS, TARGETS
from benchmarks.timing import summary, timed


def test_summary_is_the_p50_and_p90_in_milliseconds():
    seconds = [0.001 * n for n in range(1, 11)]  # 1 ms to 10 ms
    assert summary(seconds, "step") == {"step_p50_ms": 5.5, "step_p90_ms": 9.1}
    assert summary([0.0123456], "one") == {"one_p50_ms": 12.35, "one_p90_ms": 12.35}


def test_timed_gives_one_duration_per_item_in_order():
    calls = []
    seconds = timed(calls.append, ["a", "b", "c"])
    assert calls == ["a", "b", "c"] and len(seconds) == 3 and all(s >= 0 for s in seconds)


@pytest.fixture
def tuned_exported_model(exported_model, tmp_path):
    """`exported_model` as a tuned exit flow leaves it: the folder holds exit_flow.weights.h5 and
    names it, so its Keras encoder is the backbone file and more (as weights/ is)."""
    from pipeline.artifact import read_config, save_exit_flow, write_config
    from pipeline.encoder import KerasEncoder, exit_flow

    folder = Path(shutil.copytree(exported_model, tmp_path / "tuned"))
    flow = save_exit_flow(folder, exit_flow(KerasEncoder("none").model))
    config = read_config(folder)
    config["encoder"].update(weights_fingerprint=KerasEncoder("none", exit_flow_weights=flow).fingerprint,
                             tuned_exit_flow={"from_fingerprint": config["encoder"]["weights_fingerprint"]})
    write_config(folder, config)
    return folder


def test_quick_bench_writes_every_measurement(original_layout, tuned_exported_model, exported_model, tmp_path,
                                              capsys):
    out = tmp_path / "b.json"
    bench.main(["--data", str(original_layout), "--model", str(tuned_exported_model), "--backbone-weights", "none",
                "--cache-dir", str(tmp_path / "cache"), "--quick", "--json", str(out),
                "--baseline-model", str(exported_model)])  # the model it replaces
    report = json.loads(out.read_text())
    missing = [key for key in REPORT_KEYS + BASELINE_KEYS if report.get(key) is None]
    assert not missing
    assert set(report["targets"]) == set(TARGETS)
    assert all(isinstance(t["met"], bool) for key, t in report["targets"].items() if key not in INSTALL_KEYS)
    assert report["targets"]["install_size_ratio"]["met"] is None  # measured only with --install-size
    assert report["exported_end_to_end_ratio"] == round(
        report["exported_end_to_end_p50_ms"] / report["keras_end_to_end_p50_ms"], 2)
    assert report["baseline_end_to_end_ratio"] == round(
        report["exported_end_to_end_p50_ms"] / report["baseline_exported_end_to_end_p50_ms"], 2)
    assert report["baseline_model"] == str(exported_model)
    # the serving processes load the tuned folder's Keras path from the backbone file alone
    assert report["settings"]["backbone_weights"].startswith("none with the exit flow of")
    assert report["train_captions"] == 20 and report["original_train_samples"] == report["train_words"]
    assert "| End-to-end speed-up over the original |" in capsys.readouterr().out

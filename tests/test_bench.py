"""bench.py runs every measurement on a tiny model and writes them all; timings are never asserted."""
import json

import bench


def test_quick_bench_writes_every_measurement(original_layout, exported_model, tmp_path, capsys):
    out = tmp_path / "b.json"
    bench.main(["--data", str(original_layout), "--weights", str(exported_model), "--backbone-weights", "none",
                "--cache-dir", str(tmp_path / "cache"), "--quick", "--json", str(out)])
    report = json.loads(out.read_text())
    missing = [key for key in bench.REPORT_KEYS if report.get(key) is None]
    assert not missing
    assert set(report["targets"]) == set(bench.TARGETS)
    assert all(isinstance(t["met"], bool) for key, t in report["targets"].items() if key not in bench.INSTALL_KEYS)
    assert report["targets"]["install_size_ratio"]["met"] is None  # measured only with --install-size
    assert report["exported_end_to_end_ratio"] == round(
        report["exported_end_to_end_p50_ms"] / report["keras_end_to_end_p50_ms"], 2)
    assert report["train_captions"] == 20 and report["original_train_samples"] == report["train_words"]
    assert "| End-to-end speed-up over the original |" in capsys.readouterr().out

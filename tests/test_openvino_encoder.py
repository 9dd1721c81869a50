"""The exported encoder (OpenVINO): the Keras backbone's features, and captioning without TensorFlow."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline import ArtifactError, Captioner
from pipeline.artifact import ENCODER_PART_BYTES, exported_encoder_files, read_config
from pipeline.openvino_encoder import OpenVINOEncoder
from conftest import ROOT, assert_same_captions, n_best_of, only_requirements, write_image


def test_features_match_the_keras_backbone(exported_model, random_encoder, tmp_path):
    images = [write_image(tmp_path / f"{i}.png", i, size=(64, 48)) for i in range(4)]
    exported = Captioner.from_pretrained(exported_model)
    assert isinstance(exported.image_encoder, OpenVINOEncoder)  # auto: the exported one when there is one
    keras_features = random_encoder.encode(images)
    features = exported.image_encoder.encode(images)
    np.testing.assert_allclose(features, keras_features, rtol=1e-3, atol=1e-4)
    keras_path = Captioner.from_pretrained(exported_model, image_encoder=random_encoder)
    assert_same_captions(n_best_of(exported, images, 3, 3), n_best_of(keras_path, images, 3, 3))


def test_an_attention_models_export_gives_the_grid_and_the_same_heat_maps(tiny_attention_model, random_grid_encoder,
                                                                          tmp_path):
    """Exported from the grid encoder, OpenVINO gives the 100 regions Keras does (to its float32
    rounding: the random backbone's values are about 1e-5), and the captions and their maps agree."""
    import shutil

    from pipeline.artifact import write_config
    from pipeline.openvino_export import export

    folder = tmp_path / "model"
    shutil.copytree(tiny_attention_model, folder)
    config = read_config(folder)
    config["encoder"]["exported"] = export(random_grid_encoder, folder, weights="float32", precision="f32")
    write_config(folder, config)
    assert read_config(folder)["encoder"]["exported"]["pooling"] == "grid"
    images = [write_image(tmp_path / f"{i}.png", i, size=(64, 48)) for i in range(3)]
    exported = Captioner.from_pretrained(folder)
    assert isinstance(exported.image_encoder, OpenVINOEncoder) and exported.image_encoder.pooling == "grid"
    keras_grid, grid = random_grid_encoder.encode(images), exported.image_encoder.encode(images)
    assert grid.shape == keras_grid.shape == (3, 100, 2048)
    np.testing.assert_allclose(grid, keras_grid, rtol=1e-3, atol=1e-3 * np.abs(keras_grid).max())
    keras_path = Captioner.from_pretrained(folder, image_encoder=random_grid_encoder)
    for image in images:
        ours, theirs = exported.describe(image).n_best[0], keras_path.describe(image).n_best[0]
        assert ours.text == theirs.text
        np.testing.assert_allclose(ours.looked, theirs.looked, atol=1e-3)


def test_weights_are_stored_in_parts_under_the_size_limit(exported_model):
    exported = read_config(exported_model)["encoder"]["exported"]
    parts = [exported_model / name for name in exported["weight_files"]]
    assert len(parts) > 1 and all(p.stat().st_size <= ENCODER_PART_BYTES for p in parts)
    assert sorted(p.name for p in exported_model.glob("encoder*.bin")) == exported["weight_files"]


@pytest.mark.parametrize("damage, message", [
    (lambda folder, parts: parts[-1].write_bytes(parts[-1].read_bytes()[:-8]), "do not match the sha256"),
    (lambda folder, parts: parts[0].unlink(), "is missing"),
    (lambda folder, parts: (folder / "encoder.xml").write_text("<net/>"), "do not match the sha256"),
])
def test_a_damaged_export_is_refused(exported_model, tmp_path, damage, message):
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    config = read_config(folder)
    damage(folder, [folder / name for name in config["encoder"]["exported"]["weight_files"]])
    with pytest.raises(ArtifactError, match=message):
        Captioner.from_pretrained(folder)


def test_an_unknown_precision_is_refused(exported_model, tmp_path):
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["exported"]["precision"] = "int4"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="precision must be one of"):
        Captioner.from_pretrained(folder)


def test_the_app_captions_with_requirements_txt_alone(exported_model, tmp_path):
    """No TensorFlow, Keras or anything else that requirements.txt does not install."""
    image = write_image(tmp_path / "photo.png", 7, size=(40, 30))
    script = f"""
import sys
import app
demo, captioner = app.start({str(exported_model)!r})
print("CAPTION", captioner.caption({str(image)!r}))
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") and sys.modules[m]))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=only_requirements("requirements.txt"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CAPTION " in result.stdout and "LOADED []" in result.stdout


def test_the_guard_itself_refuses_what_requirements_txt_lacks():
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], cwd=ROOT, capture_output=True, text=True,
                            env=only_requirements("requirements.txt"))
    assert result.returncode == 1 and "not installed by" in result.stderr


def test_without_tensorflow_a_folder_lacking_an_export_says_what_to_do(tiny_model):
    script = f"import app\napp.start({str(tiny_model)!r})\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=only_requirements("requirements.txt"))
    assert result.returncode == 1
    assert "the Keras encoder needs TensorFlow" in result.stderr and "export_encoder.py" in result.stderr


def test_export_refuses_another_backbone(tiny_model, tmp_path):
    import shutil

    import export_encoder
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["weights_fingerprint"] = "0123456789abcdef"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="is not the one the decoder .* was trained on"):
        export_encoder.main(["--model", str(folder), "--backbone-weights", "none"])
    assert not list(folder.glob("encoder*"))


def read_exported(folder):
    import openvino as ov
    exported = read_config(folder)["encoder"]["exported"]
    weights = np.concatenate([np.fromfile(folder / name, np.uint8) for name in exported["weight_files"]])
    graph = (folder / "encoder.xml").read_text()
    return lambda: ov.Core().read_model(graph, ov.Tensor(weights))


def test_the_network_split_after_a_block_computes_the_same(exported_model):
    import openvino as ov

    from pipeline.openvino_encoder import split_after_block
    read = read_exported(exported_model)
    head, tail = split_after_block(read(), read(), 3)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    whole = ov.Core().compile_model(read(), "CPU", config)([pixels])[0]
    block_output = ov.Core().compile_model(head, "CPU", config)([pixels])[0]
    assert sorted(block_output.shape[1:]) == [19, 19, 728]  # where Xception's entry flow ends
    np.testing.assert_allclose(ov.Core().compile_model(tail, "CPU", config)([block_output])[0], whole,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="the network has 12 residual blocks"):
        split_after_block(read(), read(), 12)


@pytest.mark.skipif(not __import__("pipeline.openvino_encoder").openvino_encoder.cpu_computes_bf16(),
                    reason="this CPU has no native bfloat16 (the encoder then runs in float32)")
def test_bfloat16_with_a_float32_entry_flow_stays_close_to_float32(exported_model, tmp_path):
    import shutil
    images = [write_image(tmp_path / f"{i}.png", i, size=(64, 48)) for i in range(4)]
    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    config = read_config(folder)

    def features(**plan):
        exported = dict(config["encoder"]["exported"], **plan)
        encoder = OpenVINOEncoder(exported_encoder_files(folder, exported), exported, "x")
        return encoder, encoder.encode(images)

    _, float32 = features(precision="f32")
    mixed_encoder, mixed = features(precision="bf16", float32_blocks=3)
    _, bfloat16 = features(precision="bf16", float32_blocks=0)
    error = lambda f: np.linalg.norm(f - float32) / np.linalg.norm(float32)  # noqa: E731
    assert 0 < error(mixed) < error(bfloat16)  # bfloat16 does run, and the float32 entry flow narrows its error
    assert mixed_encoder.plan == "bf16, the first 3 blocks in f32"


def test_numpy_runs_one_thread_whatever_was_imported_first(exported_model):
    """NumPy imported before the project (an import sorter's order) still gets one BLAS thread."""
    script = f"""
import numpy, threadpoolctl
before = max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
from pipeline import Captioner
Captioner.from_pretrained({str(exported_model)!r})
print(before, max(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(int, result.stdout.split())
    assert before > 1 and after == 1

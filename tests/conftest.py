import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, settings
from PIL import Image

from load_test import free_port, png_of_zeros  # noqa: F401  (for the tests too: a free port, huge images small on disk)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from Gradio apps and clients

# Mutation testing (tools/mutation.sh passes --hypothesis-profile=mutation) needs a failing example, not
# the smallest: without shrinking, a mutant that breaks a property test fails in a second instead of
# running into mutmut's time limit while Hypothesis shrinks.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])

ROOT = Path(__file__).resolve().parents[1]
SHARED_FLICKR8K = ROOT.parent / "shared" / "flickr8k"
needs_shared = pytest.mark.skipif(not (SHARED_FLICKR8K / "Flickr8k_text").is_dir(),
                                  reason=f"the real Flickr8k is not beside the repo at {SHARED_FLICKR8K}")


def only_requirements(requirements_file: str) -> dict:
    """Environment for a child Python that can import only what `requirements_file` installs
    (tests/requirements_only/sitecustomize.py), as in a fresh virtual environment made from it."""
    return dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "requirements_only"),
                ONLY_REQUIREMENTS=str(ROOT / requirements_file))


def pytest_collection_modifyitems(config, items):
    """Under mutmut (tools/mutation.sh) the slow tests run last: a mutant that a fast test kills
    then costs no Java or model start (mutmut stops a mutant's run at its first failure)."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


def write_image(path: Path, seed: int, size=(32, 24)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# 85 million pixels: over our limit (80M), under the one Pillow applies by itself (89.5M)
OVER_OUR_PIXEL_LIMIT = 9220


@pytest.fixture
def original_layout(tmp_path):
    """A tiny Flickr8k in the original layout, with CRLF lines and the bogus `.jpg.1` entry."""
    text, images = tmp_path / "Flickr8k_text", tmp_path / "Flicker8k_Dataset"
    text.mkdir(), images.mkdir()
    names = [f"img{i}.jpg" for i in range(6)]
    for i, name in enumerate(names):
        write_image(images / name, i)
    lines = [f"{name}#{k}\tA dog number {i} runs , fast .  " for i, name in enumerate(names) for k in range(5)]
    lines += [f"2258277193_586949ec62.jpg.1#{k}\tA ghost ." for k in range(5)]
    (text / "Flickr8k.token.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    for split, part in (("train", names[:4]), ("dev", names[4:5]), ("test", names[5:])):
        (text / f"Flickr_8k.{split}Images.txt").write_bytes(("\r\n".join(part) + "\r\n").encode())
    return tmp_path


def n_best_of(captioner, images, beam_size: int = 3, n_best: int = 1):
    """Each image's n-best captions (Caption objects, best first), through the Captioner's batch forms."""
    return [d.n_best for d in captioner.describe_batch([captioner.preprocess(image) for image in images],
                                                       beam_size, n_best)]


def assert_same_captions(found, expected):
    """The same n-best captions, in the same order, with the same log-probabilities up to float32
    rounding: OpenBLAS may sum the same products in another order for arrays at other addresses."""
    assert [[c.text for c in hyps] for hyps in found] == [[c.text for c in hyps] for hyps in expected]
    assert [c.log_prob for hyps in found for c in hyps] == pytest.approx(
        [c.log_prob for hyps in expected for c in hyps], rel=1e-6)


@pytest.fixture(scope="session")
def random_encoder():
    """One randomly initialised Xception for the whole session (building it takes seconds)."""
    from pipeline.encoder import KerasEncoder
    return KerasEncoder("none")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, random_encoder):
    """A small untrained model folder for tests that need one that loads (with `random_encoder`)."""
    from pipeline.artifact import make_config, save_artifact
    from pipeline.decoder import build_decoder
    from pipeline.vocab import SPECIALS, Vocabulary

    vocab = Vocabulary(list(SPECIALS) + "a dog man runs on the grass in water".split())
    model = build_decoder(len(vocab), units=16, embedding_dim=8, dropout=0.0)
    # an untrained decoder may end at once; a low end-token bias keeps its captions non-empty
    logits = model.get_layer("word_logits")
    logits.bias.assign(np.where(np.arange(len(vocab)) == vocab.end_id, -20.0, 0.0).astype("float32"))
    config = make_config(len(vocab), 6, random_encoder.fingerprint)
    config["architecture"].update(units=16, embedding_dim=8, dropout=0.0)
    return save_artifact(tmp_path_factory.mktemp("tiny_model"), model, vocab, config)


@pytest.fixture(scope="session")
def random_grid_encoder():
    """`random_encoder`'s Xception (the same seed, so the same fingerprint), giving its grid of regions."""
    from pipeline.encoder import KerasEncoder
    return KerasEncoder("none", pooling="grid")


@pytest.fixture(scope="session")
def tiny_attention_model(tmp_path_factory, random_grid_encoder):
    """A small untrained attention-lstm model folder (with `random_grid_encoder`): its captions carry heat maps."""
    from pipeline import attention
    from pipeline.artifact import build_keras_decoder, make_config, save_artifact
    from pipeline.vocab import SPECIALS, Vocabulary

    vocab = Vocabulary(list(SPECIALS) + "a dog man runs on the grass in water".split())
    config = make_config(len(vocab), 6, random_grid_encoder.fingerprint,
                         {**attention.ARCHITECTURE, "units": 16, "embedding_dim": 8, "attention_dim": 8, "dropout": 0.0})
    model = build_keras_decoder(config)
    logits = model.get_layer("word_logits")  # as tiny_model's: captions that do not end at once
    logits.bias.assign(np.where(np.arange(len(vocab)) == vocab.end_id, -20.0, 0.0).astype("float32"))
    # the random backbone's activations are about 1e-5, so the regions would be weighed alike:
    # magnify them, and sharpen the weights, so that the model looks somewhere
    projection = model.get_layer("region_projection")
    projection.kernel.assign(projection.kernel * 1e5)
    score = model.get_layer("attention_score")
    score.kernel.assign(score.kernel * 10.0)
    return save_artifact(tmp_path_factory.mktemp("tiny_attention_model"), model, vocab, config)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, tiny_model, random_encoder):
    """`tiny_model` with its encoder exported in float32 (OpenVINO): the Keras path's features, no TensorFlow."""
    import shutil

    from pipeline.artifact import read_config, write_config
    from pipeline.openvino_export import export

    folder = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(tiny_model, folder)
    config = read_config(folder)
    config["encoder"]["exported"] = export(random_encoder, folder, weights="float32", precision="f32")
    write_config(folder, config)
    return folder


@pytest.fixture(scope="session")
def app_url(tiny_model, random_encoder):
    """The Gradio app with the tiny model, served in this process on a free localhost port."""
    import app
    from pipeline import Captioner
    from pipeline.model_source import ModelLocation

    port = free_port()
    demo = app.build_demo(Captioner.from_pretrained(tiny_model, image_encoder=random_encoder),
                          ModelLocation(tiny_model).describe())
    _, url, _ = app.serve(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def attention_app_url(tiny_attention_model, random_grid_encoder):
    """The Gradio app with the tiny attention model: the page shows where it looked."""
    import app
    from pipeline import Captioner

    demo = app.build_demo(Captioner.from_pretrained(tiny_attention_model, image_encoder=random_grid_encoder))
    _, url, _ = app.serve(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real two-node Ray cluster: a head and a second node started by `ray start` (1 CPU each,
    token authentication on, as Ray 2.60 starts it), in a temporary folder of its own, and
    stopped by their own process groups, never a machine-wide `ray stop`. Yields the environment
    a driver joins it with, as the README says."""
    import secrets
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    folder = tmp_path_factory.mktemp("ray-cluster")
    # Ray's socket paths live under its temp dir and may not pass 107 bytes: a short one of our own
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--block"]
    commands = {"head": ["ray", "start", "--head", "--port", str(port), "--temp-dir", ray_temp,
                         "--include-dashboard", "false", *common],
                "node": ["ray", "start", "--address", f"127.0.0.1:{port}", *common]}
    nodes = []
    try:
        for name, command in commands.items():
            log = folder / f"{name}.log"
            nodes.append(subprocess.Popen(command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))
            deadline = time.monotonic() + 120
            while "Ray runtime started" not in log.read_text() and time.monotonic() < deadline:
                assert nodes[-1].poll() is None, f"ray start ({name}) failed:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        for node in reversed(nodes):
            stop_group(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10  # the nodes together: one given longer took 30 s more, saving nothing
        for node in reversed(nodes):
            try:
                node.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_group(node.pid, signal.SIGKILL)
                node.wait()
        shutil.rmtree(ray_temp, ignore_errors=True)


def stop_group(pid: int, sig: int) -> None:
    """Signal the process group that `pid` leads (started with start_new_session), if it is still there."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(10):
        write_image(folder / f"{i}.jpg", i, (8, 8))
    return folder

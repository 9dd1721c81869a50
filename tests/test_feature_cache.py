"""The feature cache: features computed once per encoder and image content, resumable, robust to
damaged parts. A stand-in encoder keeps these tests free of TensorFlow (fast enough for mutmut)."""
import logging
import os
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tqdm

from pipeline.feature_cache import FeatureCache, default_cache_dir, extract_features
from pipeline.images import load_image
from conftest import write_image

# tqdm's default lock includes a multiprocessing lock that forked processes share: one killed
# while holding it (mutmut kills mutants that time out) would hang the progress bar of every later one.
tqdm.tqdm.set_lock(threading.RLock())


class CountingEncoder:
    """Stands in for Xception: a feature is the mean colour of the image's left column; calls are counted."""

    def __init__(self, key="k1", fail_after=None):
        self.key, self.fail_after, self.encoded = key, fail_after, []

    def cache_key(self):
        return self.key

    def encode(self, images, batch_size=32):
        if self.fail_after is not None and len(self.encoded) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.encoded += [getattr(image, "name", "<in memory>") for image in images]
        return np.stack([np.asarray(load_image(image), np.float32)[:, 0].mean(0) for image in images])


@pytest.fixture(autouse=True)
def default_cache_in_tmp(tmp_path, monkeypatch):
    """The default cache folder, should a test (or a mutant) fall back to it, is never the user's."""
    monkeypatch.setenv("CAPTION_CACHE_DIR", str(tmp_path / "default-cache"))


def test_cache_is_reused_and_keyed_by_encoder(tmp_path, image_dir):
    names = [f"{i}.jpg" for i in range(10)]
    first = CountingEncoder()
    features = extract_features(first, image_dir, names, tmp_path / "cache", chunk_size=4)
    assert len(first.encoded) == 10
    again = CountingEncoder()
    np.testing.assert_array_equal(extract_features(again, image_dir, names[::-1], tmp_path / "cache"),
                                  features[::-1])
    assert again.encoded == []  # everything came from disk
    other_weights = CountingEncoder(key="k2")
    extract_features(other_weights, image_dir, names[:3], tmp_path / "cache")
    assert other_weights.encoded == names[:3]  # a different backbone never reuses the cache


def test_interrupted_extraction_resumes(tmp_path, image_dir):
    names = [f"{i}.jpg" for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        extract_features(CountingEncoder(fail_after=4), image_dir, names, tmp_path / "cache", chunk_size=4)
    resumed = CountingEncoder()
    extract_features(resumed, image_dir, names, tmp_path / "cache", chunk_size=4)
    assert resumed.encoded == names[4:]
    assert len(FeatureCache(tmp_path / "cache", "k1").features) == 10


def test_a_replaced_image_is_encoded_again_even_with_the_same_name_size_and_mtime(tmp_path):
    images = tmp_path / "bmp"
    images.mkdir()
    names = [write_image(images / f"{i}.bmp", i, (8, 8)).name for i in range(4)]  # BMP: same size, same bytes count
    before = extract_features(CountingEncoder(), images, names, tmp_path / "cache")
    stat = (images / "2.bmp").stat()
    write_image(images / "2.bmp", 99, (8, 8))
    os.utime(images / "2.bmp", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as unzip or `cp -p` would leave it
    assert (images / "2.bmp").stat().st_size == stat.st_size
    again = CountingEncoder()
    after = extract_features(again, images, names, tmp_path / "cache")
    assert again.encoded == ["2.bmp"]
    assert not np.array_equal(after[2], before[2])
    np.testing.assert_array_equal(np.delete(after, 2, 0), np.delete(before, 2, 0))


def test_a_corrupt_part_is_skipped_with_a_warning_and_its_images_encoded_again(tmp_path, image_dir, caplog):
    names = [f"{i}.jpg" for i in range(10)]
    before = extract_features(CountingEncoder(), image_dir, names, tmp_path / "cache", chunk_size=4)
    parts = sorted((tmp_path / "cache" / "features" / "k1").glob("part-*.npz"))
    assert len(parts) == 3
    corrupt_part = parts[0]
    with np.load(corrupt_part) as data:
        lost = len(data["keys"])
    corrupt_part.write_bytes(corrupt_part.read_bytes()[:100])  # a disk error, or a copy cut short
    again = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="pipeline.feature_cache"):
        np.testing.assert_array_equal(extract_features(again, image_dir, names, tmp_path / "cache"), before)
    assert len(again.encoded) == lost and corrupt_part.name in caplog.text
    quiet = CountingEncoder()  # the bad part is gone: the next run neither warns nor encodes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.feature_cache"):
        extract_features(quiet, image_dir, names, tmp_path / "cache")
    assert quiet.encoded == [] and caplog.text == ""


def test_old_temporary_parts_are_removed_and_fresh_ones_kept(tmp_path, image_dir):
    folder = tmp_path / "cache" / "features" / "k1"
    folder.mkdir(parents=True)
    crashed, in_progress = folder / ".tmp-1234abcd-part-old.npz", folder / ".tmp-5678abcd-part-new.npz"
    crashed.write_bytes(b"half a part"), in_progress.write_bytes(b"being written by another process")
    two_hours_ago = time.time() - 7200
    os.utime(crashed, (two_hours_ago, two_hours_ago))
    extract_features(CountingEncoder(), image_dir, ["0.jpg"], tmp_path / "cache")
    assert not crashed.exists() and in_progress.exists()


def test_a_crash_while_a_part_is_written_leaves_no_part(tmp_path, monkeypatch, caplog):
    """Killed half-way through writing: the next run finds no part, not a truncated one, and
    nothing to warn about."""
    from pipeline import feature_cache
    real_savez = np.savez

    def killed_half_way(file, **arrays):
        real_savez(file, **arrays)
        with open(file, "r+b") as f:  # a truncated file, as a kill mid-write leaves
            f.truncate(100)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(feature_cache.np, "savez", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(tmp_path, "k").add(["a"], np.ones((1, 4), np.float32))
    monkeypatch.setattr(feature_cache.np, "savez", real_savez)
    with caplog.at_level("WARNING"):
        assert FeatureCache(tmp_path, "k").features == {}
    assert not list((tmp_path / "features" / "k").glob("part-*.npz")) and "unreadable" not in caplog.text


def test_the_default_cache_is_in_the_home_folder_unless_caption_cache_dir_names_one(tmp_path, monkeypatch, image_dir):
    monkeypatch.delenv("CAPTION_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "flickr8k-captioner"
    monkeypatch.setenv("CAPTION_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    extract_features(CountingEncoder(), image_dir, ["0.jpg"])  # no cache_root: the default
    assert len(list((tmp_path / "elsewhere" / "features" / "k1").glob("part-*.npz"))) == 1


def test_the_log_and_the_progress_bar_count_the_images_still_to_encode(tmp_path, image_dir, caplog, capsys):
    names = [f"{i}.jpg" for i in range(10)]
    extract_features(CountingEncoder(), image_dir, names[:8], tmp_path / "cache")
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="pipeline.feature_cache"):
        extract_features(CountingEncoder(), image_dir, names, tmp_path / "cache")
    assert [r.getMessage() for r in caplog.records] == [
        f"extracting features of 2 image(s) into {tmp_path / 'cache' / 'features' / 'k1'} (8 already cached), "
        "engine local"]
    final = capsys.readouterr().err.split("\r")[-1]
    assert re.match(r"image features: 100%\|[^|]*\| 2/2 \[[^]]*img/s\]", final), final


def test_images_go_to_the_encoder_in_chunks_of_512_with_its_batch_size_of_32(tmp_path):
    class Recorder:
        calls = []

        def cache_key(self):
            return "recorder"

        def encode(self, images, batch_size=None):
            self.calls.append((len(images), batch_size))
            return np.zeros((len(images), 2), np.float32)

    (tmp_path / "images").mkdir()
    names = [f"{i}.bin" for i in range(513)]
    for i, name in enumerate(names):
        (tmp_path / "images" / name).write_bytes(str(i).encode())  # distinct contents, distinct keys
    assert extract_features(Recorder(), tmp_path / "images", names, tmp_path / "cache").shape == (513, 2)
    assert Recorder.calls == [(512, 32), (1, 32)]


def test_parts_store_float32_features(tmp_path):
    FeatureCache(tmp_path, "k").add(["a", "b"], np.array([[0.1, 0.2], [0.3, 0.4]], np.float64))
    stored = FeatureCache(tmp_path, "k").get(["b", "a"])
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, [[0.3, 0.4], [0.1, 0.2]], rtol=1e-6)


def test_parts_store_grids_in_float16_and_vectors_in_float32(tmp_path):
    """A grid (image, region, value) is kept at half the size, to float16's precision; a vector whole."""
    grids = np.random.default_rng(0).uniform(0, 50, (2, 4, 3))
    FeatureCache(tmp_path / "grid", "k").add(["a", "b"], grids)
    FeatureCache(tmp_path / "vector", "k").add(["a", "b"], grids[:, 0])
    [grid_part], [vector_part] = (tmp_path / "grid").rglob("part-*.npz"), (tmp_path / "vector").rglob("part-*.npz")
    assert np.load(grid_part)["features"].dtype == np.float16
    assert np.load(vector_part)["features"].dtype == np.float32
    np.testing.assert_allclose(FeatureCache(tmp_path / "grid", "k").get(["b", "a"]), grids[::-1], rtol=1e-3)


def test_a_part_holding_pickled_objects_is_removed_unread(tmp_path, caplog):
    """A part is data, never code: one whose arrays need unpickling is refused like a corrupt one."""
    folder = tmp_path / "features" / "k"
    folder.mkdir(parents=True)
    np.savez(folder / "part-pickled.npz", keys=np.array(["a"], dtype=object), features=np.ones((1, 2), np.float32))
    with caplog.at_level(logging.WARNING, logger="pipeline.feature_cache"):
        assert FeatureCache(tmp_path, "k").features == {}
    assert not (folder / "part-pickled.npz").exists()
    assert re.fullmatch(r"feature cache: removing unreadable part part-pickled\.npz \(ValueError: .*allow_pickle.*\); "
                        r"its images will be encoded again", caplog.records[0].getMessage())


def test_a_bad_part_that_another_process_removed_first_is_no_error(tmp_path, monkeypatch):
    from pipeline import feature_cache
    folder = tmp_path / "features" / "k"
    folder.mkdir(parents=True)
    (folder / "part-bad.npz").write_bytes(b"not a zip file")
    real_load = np.load

    def removed_meanwhile(path, **kwargs):
        path.unlink()  # another process, finding the same bad part, removed it first
        return real_load(path, **kwargs)

    monkeypatch.setattr(feature_cache.np, "load", removed_meanwhile)
    assert FeatureCache(tmp_path, "k").features == {}


def test_a_stale_temporary_part_that_another_process_removed_first_is_no_error(tmp_path, monkeypatch):
    """Two processes opening one cache both find the crashed part; the second must not fail on it."""
    from pipeline import feature_cache
    folder = tmp_path / "features" / "k"
    folder.mkdir(parents=True)
    crashed = folder / ".tmp-1234abcd-part-old.npz"
    crashed.write_bytes(b"half a part")
    real_time = time.time

    def removed_meanwhile():
        crashed.unlink(missing_ok=True)  # the other process got there between the listing and the look
        return real_time() + 7200

    monkeypatch.setattr(feature_cache.time, "time", removed_meanwhile)
    assert FeatureCache(tmp_path, "k").features == {}


def fake_ray(monkeypatch, batches: int = 2):
    """encode_with_ray standing in for a Ray pool: the local encoder's features, `batches` images at a time,
    the calls recorded."""
    from pipeline import ray_engine

    calls = []

    def encode_with_ray(encoder, paths, *, batch_size, actors):
        calls.append((len(paths), batch_size, actors))
        for i in range(0, len(paths), batches):
            yield paths[i:i + batches], encoder.encode([Path(p) for p in paths[i:i + batches]])

    monkeypatch.setattr(ray_engine, "encode_with_ray", encode_with_ray)
    return calls


def test_the_ray_pass_caches_what_comes_back_in_chunks_keyed_as_the_local_pass(tmp_path, image_dir, monkeypatch):
    names = sorted(p.name for p in image_dir.iterdir())
    calls = fake_ray(monkeypatch)
    on_ray = extract_features(CountingEncoder(), image_dir, names, tmp_path / "ray", batch_size=7, chunk_size=4,
                              engine="ray", actors=2)
    assert calls == [(len(names), 7, 2)]
    local = extract_features(CountingEncoder(), image_dir, names, tmp_path / "local")
    np.testing.assert_array_equal(on_ray, local)
    parts = sorted((tmp_path / "ray" / "features" / "k1").glob("part-*.npz"))
    # batches of 2 come back; a chunk is committed once it holds 4 keys, and the rest at the end
    assert sorted(len(np.load(part)["keys"]) for part in parts) == [2, 4, 4]
    again = CountingEncoder()
    np.testing.assert_array_equal(extract_features(again, image_dir, names, tmp_path / "ray", engine="ray"), local)
    assert again.encoded == [] and len(calls) == 1  # all cached: Ray is not asked again


def test_the_ray_pass_commits_every_few_seconds_however_large_its_chunks(tmp_path, image_dir, monkeypatch):
    from pipeline import feature_cache

    names = sorted(p.name for p in image_dir.iterdir())
    fake_ray(monkeypatch, batches=1)
    # the clock moves `step` seconds each time it is read: at each batch's check and at each commit
    for step, parts in ((feature_cache.COMMIT_EVERY_S + 1, len(names)), (feature_cache.COMMIT_EVERY_S, len(names) // 2)):
        clock = iter(range(0, 1000, step))
        monkeypatch.setattr(feature_cache, "time", SimpleNamespace(monotonic=lambda: next(clock), time=time.time))
        extract_features(CountingEncoder(), image_dir, names, tmp_path / str(step), chunk_size=10_000, engine="ray")
        assert len(list((tmp_path / str(step) / "features" / "k1").glob("part-*.npz"))) == parts


def test_an_unknown_engine_is_refused(tmp_path, image_dir):
    with pytest.raises(ValueError, match="engine must be local or ray, got 'spark'"):
        extract_features(CountingEncoder(), image_dir, [next(image_dir.iterdir()).name], tmp_path, engine="spark")


def test_features_or_exit_takes_the_entry_points_options_and_exits_on_a_cluster_error(tmp_path, image_dir,
                                                                                        monkeypatch):
    from pipeline import ray_engine
    from pipeline.feature_cache import features_or_exit

    names = sorted(p.name for p in image_dir.iterdir())
    calls = fake_ray(monkeypatch)
    args = SimpleNamespace(cache_dir=tmp_path / "asked", engine="ray", actors=3)
    np.testing.assert_array_equal(features_or_exit(CountingEncoder(), image_dir, names, args),
                                  extract_features(CountingEncoder(), image_dir, names, tmp_path / "local"))
    assert calls[0][2] == 3 and (tmp_path / "asked" / "features" / "k1").is_dir()

    def refused(*args, **kwargs):
        raise ray_engine.ClusterError("--actors 3 cannot run on this cluster")
        yield

    monkeypatch.setattr(ray_engine, "encode_with_ray", refused)
    with pytest.raises(SystemExit, match=r"^error: --actors 3 cannot run on this cluster$"):
        features_or_exit(CountingEncoder(key="k2"), image_dir, names, args)

"""The feature cache: features computed once per encoder and image content, resumable, robust to
damaged parts. A stand-in encoder keeps these tests free of TensorFlow (fast enough for mutmut)."""
import logging
import os
import time

import numpy as np
import pytest

from pipeline.feature_cache import FeatureCache, extract_features
from pipeline.images import load_image
from conftest import write_image


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

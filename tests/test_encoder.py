import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from pipeline.encoder import KerasEncoder, resolve_backbone_weights
from pipeline.images import MAX_DECODED_BYTES, ImageError, bytes_to_reduce, load_image
from conftest import OVER_OUR_PIXEL_LIMIT, ROOT, png_of_zeros
from load_test import png_chunk


def test_backbone_weights_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTION_BACKBONE_WEIGHTS", raising=False)
    assert resolve_backbone_weights() == "imagenet"
    assert resolve_backbone_weights("None") == "none"
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        resolve_backbone_weights(str(tmp_path / "missing.weights.h5"))
    weights = tmp_path / "a.weights.h5"
    weights.write_bytes(b"not checked here")
    monkeypatch.setenv("CAPTION_BACKBONE_WEIGHTS", str(weights))
    assert resolve_backbone_weights() == str(weights)


def test_cache_key_follows_the_weight_values(random_encoder, image_dir, tmp_path):
    features = random_encoder.encode([image_dir / "0.jpg", image_dir / "1.jpg"])
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    same = tmp_path / "same.weights.h5"
    random_encoder.model.save_weights(same)
    from_file = KerasEncoder(str(same))
    assert from_file.cache_key() == random_encoder.cache_key()  # same values, another source
    np.testing.assert_allclose(from_file.encode([image_dir / "0.jpg"]), features[:1], rtol=1e-5, atol=1e-5)
    layer = from_file.model.get_layer("block1_conv1")
    layer.set_weights([w + 0.01 for w in layer.get_weights()])
    from_file.model.save_weights(tmp_path / "changed.weights.h5")
    assert KerasEncoder(str(tmp_path / "changed.weights.h5")).cache_key() != random_encoder.cache_key()
    # the last layer's batch-norm statistics: not the first weight, and not trainable
    statistics = KerasEncoder(str(same))
    norm = statistics.model.get_layer("block14_sepconv2_bn")
    gamma, beta, mean, variance = norm.get_weights()
    norm.set_weights([gamma, beta, mean, variance * 1.01])
    statistics.model.save_weights(tmp_path / "statistics.weights.h5")
    assert KerasEncoder(str(tmp_path / "statistics.weights.h5")).cache_key() != random_encoder.cache_key()



def _saved(image, fmt="PNG", **kw):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("make", [
    lambda: Image.new("P", (20, 10)),
    lambda: Image.new("L", (20, 10), 128),
    lambda: Image.new("RGBA", (20, 10), (255, 0, 0, 0)),
    lambda: Image.new("CMYK", (20, 10), (0, 255, 0, 0)),
    lambda: Image.fromarray(np.arange(200, dtype=np.uint16).reshape(10, 20) * 300),
    lambda: Image.new("LA", (20, 10)),
])
def test_any_image_mode_becomes_rgb(make):
    image = load_image(_saved(make(), "TIFF"))
    assert image.mode == "RGB" and image.size == (20, 10)


def test_transparent_pixels_become_white_and_16_bit_keeps_contrast():
    clear = load_image(Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
    assert clear.getpixel((0, 0)) == (255, 255, 255)
    ramp = load_image(Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000))
    assert ramp.getpixel((0, 0)) == (0, 0, 0) and ramp.getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert load_image(_saved(image, "JPEG", exif=exif)).size == (20, 40)


def test_large_photos_are_downscaled_and_animation_uses_first_frame():
    assert max(load_image(Image.new("RGB", (4000, 1000))).size) == 1024
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    assert load_image(gif.getvalue()).getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is not an image", "not an image"),
    (_saved(Image.new("RGB", (64, 64)), "JPEG")[:200], "could not be decoded"),
    (png_of_zeros(OVER_OUR_PIXEL_LIMIT, OVER_OUR_PIXEL_LIMIT), "too large"),
])
def test_bad_inputs_get_clear_errors(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_an_image_over_the_memory_budget_is_refused_before_its_pixels_are_decoded():
    # 8400 x 8400 RGBA: under the pixel limit, 282 MB once decoded. Only the header is real:
    # the refusal must come before any pixel data is read.
    header = (8400).to_bytes(4, "big") * 2 + bytes([8, 6, 0, 0, 0])
    header_only = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="too large to process .*8,400 x 8,400 pixels of mode RGBA"):
        load_image(header_only)


PEAK_MEMORY = """
import resource, sys
from pipeline.images import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1])
print(image.mode, *image.size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("side, bit_depth, color_type", [(8900, 1, 0), (8900, 16, 0), (5600, 8, 6)])
def test_a_large_image_takes_no_more_memory_than_its_budget(tmp_path, side, bit_depth, color_type):
    """Near the limits in a few hundred KB (79 MP 1-bit and 16-bit gray, 31 MP RGBA): reduced
    before any conversion. Peak resident memory of a fresh process, so Pillow's allocations count."""
    path = tmp_path / "large.png"
    path.write_bytes(png_of_zeros(side, side, bit_depth, color_type))
    budget = bytes_to_reduce(Image.open(path))
    assert budget <= MAX_DECODED_BYTES
    done = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(path)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    mode, width, height, grown_mib = done.stdout.split()
    assert (mode, int(width), int(height)) == ("RGB", 1024, 1024)
    assert int(grown_mib) < budget / 2**20 + 40, done.stdout  # the decoding, a reduced copy and little else


def corrupted_variants(data: bytes, step: int):
    """`data` cut short, and with one byte flipped, at every `step`-th position."""
    for position in range(8, len(data), step):
        yield data[:position]
        yield data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


def multi_page_tiff(pages: int, side: int = 16) -> bytes:
    frames = [Image.new("RGB", (side, side), (i % 256, 0, 0)) for i in range(pages)]
    return _saved(frames[0], "TIFF", save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("fmt", ["AVIF", "QOI", "TIFF"])
def test_any_decoding_failure_is_an_image_error(fmt):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = multi_page_tiff(3) if fmt == "TIFF" else _saved(photo, fmt)
    escaped = set()  # what Pillow itself raises besides the errors a decoder is documented to raise
    for variant in corrupted_variants(data, step=max(1, len(data) // 150)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF, which is the point here
            try:
                raw = Image.open(io.BytesIO(variant))
                raw.load()
                for page in range(getattr(raw, "n_frames", 1)):
                    raw.seek(page)
                    raw.load()
            except (OSError, SyntaxError, ValueError):
                pass
            except Exception as error:
                escaped.add(type(error).__name__)
            try:
                assert load_image(variant).mode == "RGB"
            except ImageError:
                pass
    assert escaped, f"no corruption of this {fmt} file makes Pillow raise anything unusual: the test proves nothing"


def test_a_tiff_with_thousands_of_pages_is_not_walked(monkeypatch):
    data = multi_page_tiff(2000, side=1)
    seeks = []
    original_seek = TiffImagePlugin.TiffImageFile._seek
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek",
                        lambda self, frame: seeks.append(frame) or original_seek(self, frame))
    assert load_image(data).size == (1, 1)
    assert len(seeks) <= 2

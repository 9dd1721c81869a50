"""The Gradio app, served in-process on a free localhost port and called through gradio_client."""
import io
import logging
import struct
import zlib

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from conftest import SHARED_FLICKR8K, needs_shared
from pipeline import Captioner

EXAMPLES = sorted(app.EXAMPLES.glob("*.jpg"))


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False, download_files=False)


def caption(client, path, beam_size=3):
    return client.predict(handle_file(str(path)), beam_size, api_name="/caption")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(side: int = 30000) -> bytes:
    """A real side x side 1-bit black PNG: about 100 KB on disk, 900M pixels once opened."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte and packed pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (40, 30), i) for i in (10, 120, 200)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


# name -> (file contents, None when a caption is expected, else words the error must contain)
BAD_INPUTS = {
    "notes.jpg": (lambda: b"%PDF-1.4 these are not pixels\n", "not an image"),
    "empty.jpg": (lambda: b"", "empty"),
    "truncated.jpg": (lambda: EXAMPLES[0].read_bytes()[:4000], "truncated"),
    "bomb.png": (decompression_bomb, "too large"),
    "tiny.png": (lambda: encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), None),
    "animated.gif": (animated_gif, None),
    "cmyk.jpg": (lambda: encoded(Image.new("CMYK", (64, 48), (0, 120, 200, 10)), "JPEG"), None),
    "sixteen_bit.png": (lambda: encoded(Image.fromarray(
        np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)), "PNG"), None),
    "transparent.png": (lambda: encoded(Image.new("RGBA", (64, 48), (0, 0, 255, 0)), "PNG"), None),
}


def test_example_gets_a_caption_and_its_n_best(client):
    text, table = caption(client, EXAMPLES[0], beam_size=3)
    assert text.strip()
    rows = table["data"]
    assert table["headers"] == ["caption", "probability"]
    assert len(rows) == 3 and rows[0][0] == text and len({caption for caption, _ in rows}) == 3
    probabilities = [probability for _, probability in rows]
    assert all(0 < p <= 1 for p in probabilities) and probabilities == sorted(probabilities, reverse=True)


def test_beam_size_sets_the_number_of_alternatives(client):
    assert len(caption(client, EXAMPLES[1], beam_size=1)[1]["data"]) == 1
    with pytest.raises(AppError, match="greater than maximum"):
        caption(client, EXAMPLES[1], beam_size=app.MAX_BEAM + 1)


def test_no_photo_asks_for_one(client):
    with pytest.raises(AppError, match="Upload a photo first"):
        client.predict(None, 3, api_name="/caption")


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gets_a_caption_or_a_clear_error(client, tmp_path, name):
    make, error_words = BAD_INPUTS[name]
    path = tmp_path / name
    path.write_bytes(make())
    if error_words is None:
        assert caption(client, path)[0].strip()
    else:
        with pytest.raises(AppError) as error:
            caption(client, path)
        message = str(error.value)
        assert error_words in message and message.startswith("Cannot caption this file")
        assert str(tmp_path) not in message and "gradio" not in message  # no server paths
    assert caption(client, EXAMPLES[0])[0].strip()  # and the app still serves the next request


def test_eight_concurrent_requests_all_succeed(client):
    expected = {path: caption(client, path)[0] for path in EXAMPLES}
    paths = (EXAMPLES * 2)[:8]
    jobs = [client.submit(handle_file(str(path)), 3, api_name="/caption") for path in paths]
    assert [job.result(timeout=300)[0] for job in jobs] == [expected[path] for path in paths]


def test_uploads_are_not_logged(client, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    photo = tmp_path / "private-holiday-photo.jpg"
    photo.write_bytes(EXAMPLES[2].read_bytes())
    caption(client, photo)
    (tmp_path / "private-broken-photo.jpg").write_bytes(b"junk")
    with pytest.raises(AppError):
        caption(client, tmp_path / "private-broken-photo.jpg")
    printed = "".join(capfd.readouterr()) + caplog.text
    assert "private-" not in printed and "Cannot caption" not in printed


def test_flagging_is_off_unless_the_operator_turns_it_on(tiny_model, random_encoder, monkeypatch):
    captioner = Captioner.from_pretrained(tiny_model, image_encoder=random_encoder)
    monkeypatch.delenv("GRADIO_FLAGGING_MODE", raising=False)
    assert app.build_demo(captioner).flagging_mode == "never"
    monkeypatch.setenv("GRADIO_FLAGGING_MODE", "manual")
    assert app.build_demo(captioner).flagging_mode == "manual"


def test_examples_are_credited():
    credits = (app.EXAMPLES / "README.md").read_text()
    assert 6 <= len(EXAMPLES) <= 10 and "Flickr8k" in credits
    assert all(path.name in credits for path in EXAMPLES)


@needs_shared
def test_examples_come_from_the_flickr8k_test_split():
    test_split = (SHARED_FLICKR8K / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    assert {path.name for path in EXAMPLES} <= set(test_split)

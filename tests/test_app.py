"""The Gradio app, served in-process on a free localhost port and called through gradio_client."""
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status
from PIL import Image

import app
from serving import inputs
from serving.inputs import NO_LINKS
from serving.uploads import CountedUploads, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, NO_LONGER_HERE, read_upload
from conftest import OVER_OUR_PIXEL_LIMIT, ROOT, SHARED_FLICKR8K, free_port, needs_shared, png_of_zeros
from pipeline import Captioner
from pipeline.beam_search import MAX_BEAM_SIZE
from pipeline.model_source import ModelLocation

EXAMPLES = sorted(app.EXAMPLES.glob("*.jpg"))


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False, download_files=False)


def caption(client, path, beam_size=3):
    return client.predict(handle_file(str(path)), beam_size, api_name="/caption")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (40, 30), i) for i in (10, 120, 200)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated_qoi() -> bytes:
    """Pillow's QOI decoder raises IndexError on this, not the OSError other decoders raise."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return encoded(photo, "QOI")[:14]


def thousand_page_tiff() -> bytes:
    pages = [Image.new("RGB", (8, 8), (i % 256, 90, 30)) for i in range(1000)]
    return encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


# name -> (file contents, None when a caption is expected, else words the error must contain)
BAD_INPUTS = {
    "notes.jpg": (lambda: b"%PDF-1.4 these are not pixels\n", "not an image"),
    "empty.jpg": (lambda: b"", "empty"),
    "truncated.jpg": (lambda: EXAMPLES[0].read_bytes()[:4000], "truncated"),
    "bomb.png": (lambda: png_of_zeros(OVER_OUR_PIXEL_LIMIT, OVER_OUR_PIXEL_LIMIT), "too large"),
    "over_budget.png": (lambda: png_of_zeros(8200, 8200, 8, 6), "too large"),  # RGBA: 67 MP, 513 MB to reduce
    "truncated.qoi": (truncated_qoi, "could not be decoded"),
    "pages.tiff": (thousand_page_tiff, None),
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
    with pytest.raises(AppError, match="The beam size must be a whole number from 1 to 10, not 11"):
        caption(client, EXAMPLES[1], beam_size=MAX_BEAM_SIZE + 1)


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
        assert name not in message and get_upload_folder() not in message  # nothing of the server's upload
    assert caption(client, EXAMPLES[0])[0].strip()  # and the app still serves the next request


def wait_until(condition, timeout: float = 120) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class GatedCaptioner:
    """The tiny captioner, holding every request at `gate`; it counts how many run at once."""

    def __init__(self, captioner: Captioner):
        self.captioner, self.gate, self.entered = captioner, threading.Event(), threading.Event()
        self.lock, self.running, self.most_at_once = threading.Lock(), 0, 0
        self.looks_at_regions = captioner.looks_at_regions

    def describe(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.set()
        try:
            self.gate.wait(timeout=120)
            return self.captioner.describe(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def test_one_request_runs_at_a_time_and_requests_that_would_wait_too_long_are_refused_at_once(tiny_model,
                                                                                              random_encoder):
    """With each request taken to cost 2 s, the queue admits while the wait stays within MAX_WAIT_S."""
    gated = GatedCaptioner(Captioner.from_pretrained(tiny_model, image_encoder=random_encoder))
    demo = app.build_demo(gated, seconds_per_photo=2.0)
    _, url, _ = app.serve(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    admitted, extra = int(app.MAX_WAIT_S / 2.0) + 1, 3  # the one running, and those whose wait is in bound
    try:
        client = Client(url, verbose=False, download_files=False)
        first = client.submit(handle_file(str(EXAMPLES[0])), 1, api_name="/caption")
        assert gated.entered.wait(timeout=120)
        waiting = [client.submit(handle_file(str(EXAMPLES[i % len(EXAMPLES)])), 1, api_name="/caption")
                   for i in range(admitted - 1 + extra)]
        # every request has joined the queue or been turned away before the first one finishes
        assert wait_until(lambda: all(job.done() or job.status().code == Status.IN_QUEUE for job in waiting))
        path = upload(url, "busy.jpg", EXAMPLES[1].read_bytes())
        busy = httpx.post(f"{url.rstrip('/')}/gradio_api/call/caption", json={"data": [file_reference(path), 1]})
        assert busy.status_code == 503 and "The app is busy" in busy.json()["detail"]
        assert "try again" in busy.json()["detail"]
        gated.gate.set()
        answers, refused = [], 0
        for job in [first, *waiting]:
            try:
                answers.append(job.result(timeout=300))
            except QueueError:
                refused += 1
    finally:
        gated.gate.set()
        demo.close()
    assert refused == extra and len(answers) == admitted
    assert all(text.strip() for text, _ in answers)
    assert gated.most_at_once == app.CONCURRENCY_LIMIT == 1


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


def flag_buttons(demo) -> int:
    return sum(1 for c in demo.config["components"] if c.get("props", {}).get("value") == "Flag")


def test_flagging_is_off_unless_the_operator_turns_it_on(tiny_model, random_encoder, monkeypatch, tmp_path):
    captioner = Captioner.from_pretrained(tiny_model, image_encoder=random_encoder)
    monkeypatch.delenv("GRADIO_FLAGGING_MODE", raising=False)
    assert flag_buttons(app.build_demo(captioner)) == 0
    monkeypatch.setenv("GRADIO_FLAGGING_MODE", "manual")
    monkeypatch.chdir(tmp_path)  # flags go to .gradio/flagged/ where the app runs
    assert flag_buttons(app.build_demo(captioner)) == 1


def test_examples_are_credited():
    credits = (app.EXAMPLES / "README.md").read_text()
    assert 6 <= len(EXAMPLES) <= 10 and "Flickr8k" in credits
    assert all(path.name in credits for path in EXAMPLES)


@needs_shared
def test_examples_come_from_the_flickr8k_test_split():
    test_split = (SHARED_FLICKR8K / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    assert {path.name for path in EXAMPLES} <= set(test_split)


def test_the_page_says_which_model_answers(app_url, tiny_model):
    config = httpx.get(f"{app_url.rstrip('/')}/config").json()
    assert f"Model: {ModelLocation(tiny_model).describe()}." in json.dumps(config)


def test_a_photo_given_as_a_link_is_refused_not_downloaded(client):
    with pytest.raises(AppError, match=NO_LINKS):
        client.predict(handle_file("http://127.0.0.1:9/holiday.jpg"), 3, api_name="/caption")


def test_the_size_of_a_file_is_checked_before_it_is_read(tmp_path):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: nothing is written, so nothing should be read either
    with pytest.raises(gr.Error, match=f"larger than {MAX_UPLOAD_MB} MB"):
        read_upload(huge)


def uploads_named(name: str) -> list[Path]:
    return list(Path(get_upload_folder()).rglob(name))


@pytest.mark.parametrize("content", ["photo", "junk"])
def test_each_upload_is_deleted_when_its_request_is_done(client, tmp_path, content):
    path = tmp_path / f"delete-me-{content}.jpg"
    path.write_bytes(EXAMPLES[3].read_bytes() if content == "photo" else b"junk")
    try:
        caption(client, path)
    except AppError:
        assert content == "junk"
    assert uploads_named(path.name) == []


def test_the_example_files_are_never_deleted(client):
    for path in EXAMPLES[:2]:
        assert caption(client, path)[0].strip()
        assert uploads_named(path.name)  # Gradio's copy, which a click on the example sends again


def test_gradios_upload_sweep_survives_uploads_during_its_pass():
    uploads = CountedUploads({"/tmp/gradio/a/photo.jpg"})
    sweeping = iter(uploads)
    uploads.update(["/tmp/gradio/b/photo.jpg"])  # a request thread, while the sweep is part-way
    assert list(sweeping) == ["/tmp/gradio/a/photo.jpg"]


def test_a_shared_upload_is_deleted_with_the_last_request_that_needs_it():
    uploads = CountedUploads()
    uploads.update(["/tmp/gradio/same/photo.jpg"]), uploads.update(["/tmp/gradio/same/photo.jpg"])
    assert uploads.release("/tmp/gradio/same/photo.jpg") is False
    assert uploads.release("/tmp/gradio/same/photo.jpg") is True
    assert uploads.release("/tmp/gradio/same/photo.jpg") is True  # a re-run of a photo already gone


def call_without_upload(app_url: str, server_path: str) -> str:
    """/caption through Gradio's HTTP API with a file already on the server, as the page re-sends one."""
    api = f"{app_url.rstrip('/')}/gradio_api"
    payload = {"data": [{"path": server_path, "meta": {"_type": "gradio.FileData"}}, 3]}
    event = httpx.post(f"{api}/call/caption", json=payload).json()["event_id"]
    return httpx.get(f"{api}/call/caption/{event}", timeout=120).text


def test_re_running_an_upload_that_is_gone_asks_for_the_photo_again(app_url):
    upload = httpx.post(f"{app_url.rstrip('/')}/gradio_api/upload",
                        files={"files": ("rerun.jpg", EXAMPLES[4].read_bytes(), "image/jpeg")}).json()[0]
    assert "event: complete" in call_without_upload(app_url, upload)
    again = call_without_upload(app_url, upload)
    assert "event: error" in again and NO_LONGER_HERE in again and "Traceback" not in again


def test_fetched_urls_are_not_logged(app_url, caplog):
    caplog.set_level(logging.DEBUG)  # as verbose as an operator's log may be
    httpx.get(f"{app_url.rstrip('/')}/config?photo=private-link")
    assert "private-link" not in caplog.text


ANALYTICS = "import app, gradio.analytics as a; print(a.analytics_enabled())"


@pytest.mark.parametrize("setting, sent", [(None, "False"), ("True", "True")])
def test_no_analytics_unless_the_operator_opts_in(setting, sent):
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    if setting:
        env["GRADIO_ANALYTICS_ENABLED"] = setting
    done = subprocess.run([sys.executable, "-c", ANALYTICS], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == sent, done.stderr[-2000:]


@pytest.mark.parametrize("dev_distances, unfamiliar", [(np.zeros(10), True), (np.full(10, 2.0), False)])
def test_the_unfamiliar_flag_reaches_every_path(tiny_model, random_encoder, dev_distances, unfamiliar):
    """/describe, the batch table and its CSV carry familiarity; the page's note says it; /caption keeps
    its two values. Every dev photo at distance 0 makes any photo unfamiliar; every one at distance 2, none."""
    from pipeline.encoder import FEATURE_DIM
    from pipeline.familiarity import Familiarity

    captioner = Captioner.from_pretrained(tiny_model, image_encoder=random_encoder)
    captioner.config = {**captioner.config, "familiarity": {"unfamiliar_below": 0.03}}
    captioner.familiarity = Familiarity(np.eye(1, FEATURE_DIM), dev_distances)
    demo = app.build_demo(captioner)
    _, url, _ = app.serve(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False, download_files=False)
        described = client.predict(handle_file(str(EXAMPLES[0])), 3, api_name="/describe")
        text, table = client.predict(handle_file(str(EXAMPLES[0])), 3, api_name="/caption")
        rows, csv_file = client.predict([handle_file(str(EXAMPLES[0]))], 3, api_name="/caption_batch")
        csv_rows = read_csv(csv_file)
    finally:
        demo.close()
    assert described["caption"] == text == table["data"][0][0] == captioner.caption(EXAMPLES[0])
    assert described["unfamiliar"] is unfamiliar and described["familiarity"] == (0.0 if unfamiliar else 1.0)
    assert [b["caption"] for b in described["best"]] == [row[0] for row in table["data"]]
    expected_row = [EXAMPLES[0].name, text, described["familiarity"], "yes" if unfamiliar else "no", ""]
    assert rows["data"] == [expected_row]
    assert csv_rows[1] == [str(cell) for cell in expected_row]
    description = captioner.describe(EXAMPLES[0])
    assert (app.UNFAMILIAR_NOTE in app.familiarity_note(description)) is unfamiliar
    shares = app.probability_shares(description)
    assert abs(sum(shares.values()) - 1) < 1e-9 and list(shares) == [c.text for c in description.n_best]


# --- the batch tab (/caption_batch) ----------------------------------------------------------------

def caption_batch(client, paths, beam_size=3):
    return client.predict([handle_file(str(p)) for p in paths], beam_size, api_name="/caption_batch")


def read_csv(download: dict) -> list[list[str]]:
    """The rows of a CSV file the app returned (the client leaves files on the server: download_files=False)."""
    import csv
    return list(csv.reader(httpx.get(download["url"]).text.splitlines()))


def test_many_photos_get_a_row_each_and_a_csv(client, tmp_path):
    broken = tmp_path / "broken-photo.jpg"
    broken.write_bytes(b"%PDF-1.4 these are not pixels\n")
    photos = [EXAMPLES[0], broken, EXAMPLES[1]]
    table, csv_file = caption_batch(client, photos)
    assert table["headers"] == app.BATCH_COLUMNS
    rows = table["data"]
    assert [row[0] for row in rows] == [p.name for p in photos]
    # the same captions as /caption gives one photo at a time
    assert [rows[0][1], rows[2][1]] == [caption(client, EXAMPLES[0])[0], caption(client, EXAMPLES[1])[0]]
    error = app.BATCH_COLUMNS.index("error")
    assert rows[1][1] == "" and "not an image" in rows[1][error] and rows[0][error] == rows[2][error] == ""
    assert read_csv(csv_file) == [app.BATCH_COLUMNS, *[["" if v is None else str(v) for v in row] for row in rows]]
    assert all(uploads_named(p.name) == [] for p in photos[1:2])  # each upload deleted when its request is done


def test_a_link_among_many_photos_gets_its_own_error_row(client):
    table, _ = client.predict([handle_file(str(EXAMPLES[2])), handle_file("http://127.0.0.1:9/holiday.jpg")], 3,
                              api_name="/caption_batch")
    (_, text, _, _, error), (_, no_text, _, _, link_error) = table["data"]
    assert text.strip() and error == "" and no_text == "" and link_error == NO_LINKS


def test_too_many_photos_are_refused_and_deleted(client, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "MAX_BATCH_PHOTOS", 2)  # read by the handler at each request
    photos = []
    for i in range(3):
        photos.append(tmp_path / f"one-too-many-{i}.jpg")
        photos[-1].write_bytes(EXAMPLES[i].read_bytes() + bytes([i]))  # three distinct uploads
    with pytest.raises(AppError, match="At most 2 photos at a time"):
        caption_batch(client, photos)
    assert all(uploads_named(p.name) == [] for p in photos)


def test_no_photos_ask_for_some(client):
    with pytest.raises(AppError, match="Upload some photos first"):
        client.predict([], 3, api_name="/caption_batch")


def test_start_loads_and_warms_up_the_model_then_builds_the_page_around_it(tiny_model, random_encoder,
                                                                            monkeypatch):
    from pipeline import model_source

    warmed = []

    def load(folder, encoder):
        captioner = Captioner.from_pretrained(folder, image_encoder=random_encoder)
        monkeypatch.setattr(captioner, "warm_up", lambda: warmed.append(True))
        return captioner

    monkeypatch.setattr(model_source, "load_captioner", load)
    demo, captioner = app.start(tiny_model)
    # twice: the first pass sets up the runtime's kernels, the second is timed for the queue's first guess
    assert isinstance(captioner, Captioner) and isinstance(demo, gr.Blocks) and warmed == [True, True]
    assert f"Model: {ModelLocation(tiny_model).describe()}." in json.dumps(demo.config, default=str)  # a State holds a function


# --- what a request may carry, and refusals at the edge ------------------------------------------

def file_reference(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def upload(app_url: str, name: str, data: bytes) -> str:
    return httpx.post(f"{app_url.rstrip('/')}/gradio_api/upload", files={"files": (name, data, "image/jpeg")}).json()[0]


@pytest.mark.parametrize("endpoint, data, message", [
    ("caption_batch", lambda p: [[file_reference(p)] * 50_000, 3], "larger than the 256 KB the app accepts"),
    ("caption_batch", lambda p: [[file_reference(p)] * (app.MAX_BATCH_PHOTOS + 1), 3],
     f"names {app.MAX_BATCH_PHOTOS + 1} files; the app takes at most {app.MAX_BATCH_PHOTOS}"),
    ("caption", lambda p: [{"nested": [file_reference(p)] * 30_000}, 3], "larger than the 256 KB"),
    ("caption", lambda p: [{"nested": [file_reference(p)] * 40}, 3], "names 40 files"),
])
def test_a_request_carrying_too_much_is_refused_before_gradio_reads_it(app_url, endpoint, data, message):
    path = upload(app_url, "limits.jpg", EXAMPLES[0].read_bytes())
    answer = httpx.post(f"{app_url.rstrip('/')}/gradio_api/call/{endpoint}", json={"data": data(path)}, timeout=30)
    assert answer.status_code == 413 and message in answer.json()["detail"]


def test_a_body_nested_too_deeply_is_refused(app_url):
    body = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = httpx.post(f"{app_url.rstrip('/')}/gradio_api/call/caption", content=body,
                        headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and "nested too deeply" in answer.json()["detail"]


def test_a_body_sent_without_its_length_is_cut_off_at_the_limit(app_url):
    sent = []

    def chunks():  # 10 MB in all, without a Content-Length: the refusal must not wait for the end
        for _ in range(160):
            sent.append(1)
            yield b" " * 65536

    try:
        answer = httpx.post(f"{app_url.rstrip('/')}/gradio_api/call/caption", content=chunks(),
                            headers={"content-type": "application/json"}, timeout=30)
        assert answer.status_code == 413
    except httpx.TransportError:  # the server answered and closed while the client was still sending
        pass
    assert len(sent) < 160


def call_raw(app_url: str, endpoint: str, data: list) -> str:
    api = f"{app_url.rstrip('/')}/gradio_api"
    event = httpx.post(f"{api}/call/{endpoint}", json={"data": data}).json()["event_id"]
    return httpx.get(f"{api}/call/{endpoint}/{event}", timeout=120).text


@pytest.mark.parametrize("beam", ["abc", None, 2.5, 0, 11, True, "3"])
@pytest.mark.parametrize("endpoint", ["caption", "caption_batch"])
def test_a_beam_size_that_is_not_a_whole_number_from_1_to_10_is_refused_clearly(app_url, capfd, endpoint, beam):
    path = upload(app_url, "beam.jpg", EXAMPLES[1].read_bytes())
    answer = call_raw(app_url, endpoint, [file_reference(path) if endpoint == "caption" else [file_reference(path)],
                                          beam])
    assert "event: error" in answer and "The beam size must be a whole number from 1 to 10" in answer
    assert "Traceback" not in "".join(capfd.readouterr())


def test_a_whole_beam_size_sent_as_a_float_is_taken(app_url):
    path = upload(app_url, "beam-float.jpg", EXAMPLES[1].read_bytes())
    assert "event: complete" in call_raw(app_url, "caption", [file_reference(path), 2.0])


@pytest.mark.parametrize("value", ["/etc/hostname", "private-path/photo.jpg", 42, ["a"]])
def test_a_photo_that_is_not_a_file_reference_gets_the_apps_message(app_url, capfd, caplog, value):
    caplog.set_level(logging.DEBUG)
    answer = call_raw(app_url, "caption", [value, 3])
    assert "event: error" in answer and inputs.NOT_A_FILE in answer
    printed = "".join(capfd.readouterr()) + caplog.text
    assert "Traceback" not in printed and "private-path" not in printed


@pytest.mark.parametrize("endpoint", ["caption", "caption_batch"])
def test_a_link_sent_as_a_stream_is_refused_as_a_link(app_url, endpoint):
    link = {"path": "http://127.0.0.1:9/holiday.jpg", "url": "http://127.0.0.1:9/holiday.jpg", "is_stream": True,
            "meta": {"_type": "gradio.FileData"}}
    answer = call_raw(app_url, endpoint, [link if endpoint == "caption" else [link], 3])
    assert NO_LINKS in answer and NO_LONGER_HERE not in answer


def test_batch_csv_cells_never_start_a_formula(client, tmp_path):
    names = ["@SUM(A1).jpg", "-2+3.jpg", "+cmd.jpg", "=1+1.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(EXAMPLES[0].read_bytes())
    table, csv_file = caption_batch(client, [tmp_path / name for name in names])
    assert [row[0] for row in table["data"]] == names  # the table shows the names as they are
    cells = [row[0] for row in read_csv(csv_file)[1:]]
    assert cells == ["'" + name for name in names]


def test_a_refused_request_deletes_its_uploads_at_once(tiny_model, random_encoder, tmp_path):
    """The queue's refusals (full) never reach the handler, which deletes uploads: they go at once."""
    gated = GatedCaptioner(Captioner.from_pretrained(tiny_model, image_encoder=random_encoder))
    demo = app.build_demo(gated, seconds_per_photo=2.0)
    _, url, _ = app.serve(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    photos = []
    for i in range(int(app.MAX_WAIT_S / 2.0) + 1 + 3):
        photos.append(tmp_path / f"queued-{i}.jpg")
        photos[-1].write_bytes(EXAMPLES[i % len(EXAMPLES)].read_bytes() + i.to_bytes(2, "big"))  # distinct uploads
    try:
        client = Client(url, verbose=False, download_files=False)
        jobs = [client.submit(handle_file(str(photos[0])), 1, api_name="/caption")]
        assert gated.entered.wait(timeout=120)
        jobs += [client.submit(handle_file(str(photo)), 1, api_name="/caption") for photo in photos[1:]]
        assert wait_until(lambda: all(job.done() or job.status().code == Status.IN_QUEUE for job in jobs[1:]))
        refused = [photo for photo, job in zip(photos, jobs) if job.done() and isinstance(job.exception(), QueueError)]
        assert len(refused) == 3
        assert all(uploads_named(photo.name) == [] for photo in refused)  # while the others still wait
        assert all(uploads_named(photo.name) for photo, job in zip(photos, jobs) if photo not in refused)
    finally:
        gated.gate.set()
        demo.close()


def test_gradios_sweep_takes_the_folders_it_leaves_empty(tiny_model, random_encoder, tmp_path, monkeypatch):
    from gradio.route_utils import delete_files_created_by_app

    import serving.uploads
    monkeypatch.setattr(serving.uploads, "EMPTY_FOLDER_AGE_S", -1)  # every empty folder is old enough
    demo = app.build_demo(Captioner.from_pretrained(tiny_model, image_encoder=random_encoder))
    _, url, _ = app.serve(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False, download_files=False)
        # each leaves a CSV file in a folder of its own
        csv_folders = {Path(caption_batch(client, [EXAMPLES[i]])[1]["path"]).parent for i in range(3)}
        assert len(csv_folders) == 3 and all(folder.is_dir() for folder in csv_folders)
        delete_files_created_by_app(demo, None)  # Gradio's sweep, as at its ten-minute mark
        assert not any(folder.exists() for folder in csv_folders)
        assert [p for p in Path(get_upload_folder()).iterdir() if p.is_dir() and not any(p.iterdir())] == []
    finally:
        demo.close()


def test_the_api_page_offers_no_link_for_a_photo(app_url):
    """The API page and its snippets come from /info: Gradio's own offered handle_file('https://.../bus.png')
    and "a publicly available URL"."""
    info = httpx.get(f"{app_url.rstrip('/')}/gradio_api/info").json()
    for name in ("/caption", "/describe", "/caption_batch"):
        endpoint = info["named_endpoints"][name]
        snippets = endpoint.pop("code_snippets")  # they name the app's own address, and nothing else
        described = json.dumps(endpoint)
        assert "http" not in described and "url or base64" not in described.lower(), name
        assert "handle_file('photo.jpg')" in snippets["python"] and "http" not in snippets["python"].split(
            "Client(", 1)[1].split("\n", 1)[1], name


def test_where_it_looked_has_its_own_endpoint_and_caption_stays_as_it_was(attention_app_url):
    """With an attention model: /caption answers as it always has (caption, best), and
    /where_it_looked gives each word of the same caption its weights over the 10x10 regions."""
    client = Client(attention_app_url, verbose=False)
    text, table = client.predict(handle_file(str(EXAMPLES[0])), 3, api_name="/caption")
    assert text.strip() and table["data"][0][0] == text
    looked = client.predict(handle_file(str(EXAMPLES[0])), 3, api_name="/where_it_looked")
    assert looked["caption"] == text and looked["words"] == text.split()
    weights = np.array(looked["weights"])
    assert weights.shape == (len(looked["words"]), 10, 10)
    np.testing.assert_allclose(weights.sum(axis=(1, 2)), 1, atol=1e-3)


def test_a_model_without_attention_says_it_cannot_show_where_it_looked(client):
    with pytest.raises(AppError, match="reads the photo as a whole"):
        client.predict(handle_file(str(EXAMPLES[0])), 3, api_name="/where_it_looked")


def test_the_spotlight_follows_each_word(tiny_attention_model, random_grid_encoder):
    """The page's picture for a word: the shown photo (at most SHOWN_SIDE), brightest in the cells
    the word's weights are heaviest in, dimmed to a quarter where they are nil."""
    from serving.heatmaps import SHOWN_SIDE, heat_map, shown_photo, spotlight, word_choices

    captioner = Captioner.from_pretrained(tiny_attention_model, image_encoder=random_grid_encoder)
    photo = EXAMPLES[0].read_bytes()
    best = captioner.describe(photo).n_best[0]
    shown = shown_photo(photo)
    assert shown.shape == (224, 224, 3)  # the example as it is: never enlarged
    large = io.BytesIO()
    Image.new("RGB", (1000, 500)).save(large, "PNG")
    assert shown_photo(large.getvalue()).shape == (SHOWN_SIDE // 2, SHOWN_SIDE, 3)
    assert word_choices(best) == [f"{i}. {w}" for i, w in enumerate(best.text.split(), 1)]
    for weights in best.looked:
        light = heat_map(weights, *shown.shape[:2])
        assert light.shape == shown.shape[:2] and light.min() >= 0 and light.max() == pytest.approx(1)
        row, column = np.unravel_index(np.argmax(light), light.shape)
        assert weights[row * 10 // shown.shape[0], column * 10 // shown.shape[1]] >= np.sort(weights, axis=None)[-4]
        lit = spotlight(shown, weights)
        np.testing.assert_allclose(lit, shown * (0.25 + 0.75 * light)[..., None], atol=1)
    white = np.full((20, 20, 3), 255, np.uint8)
    one_cell = np.zeros((10, 10)); one_cell[0, 0] = 1
    assert spotlight(white, one_cell)[0, 0, 0] == 255 and spotlight(white, one_cell)[-1, -1, 0] == 63

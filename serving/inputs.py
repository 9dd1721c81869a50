"""The app's inputs, checked at the edge: photos only as uploaded files (never links, never plain
strings), and a beam size that is a whole number in range, each refused with a clear message and
no traceback in the server's log.
"""
import math

import gradio as gr
from gradio_client.utils import is_http_url_like

from pipeline.beam_search import DEFAULT_BEAM_SIZE, MAX_BEAM_SIZE

NO_LINKS = "Send the photo itself: the app does not download photos from links."
NOT_A_FILE = ("Send the photo as a file (gradio_client: handle_file(path); JavaScript: a Blob or File): "
              "this value is not one.")
# What the handler gets in place of a link: it answers with NO_LINKS like any other bad input.
# (Refusing in Gradio's file handling itself would fail the request's queue join with a bare HTTP 400.)
LINK_STAND_IN = "link-not-downloaded"
# The photo's box, in pixels: a tall portrait photo at its own height pushed the button below the
# fold (1,794 px of a 1280 x 800 window); within this box it is scaled to fit
PHOTO_HEIGHT = 400


class FilesOnly:
    """A component's data model that answers a value that is not a file reference (a plain path
    string, say) with NOT_A_FILE, where Gradio's own validation error would reach the caller as an
    opaque failure and the server's log as a traceback holding the value."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):  # its schema (the API page) and the rest, as they were
        return getattr(self._model, name)

    def model_validate(self, value, *args, **kwargs):
        try:
            return self._model.model_validate(value, *args, **kwargs)
        except ValueError:  # pydantic's ValidationError
            raise gr.Error(NOT_A_FILE, print_exception=False) from None


SENT_AS_A_FILE = ("The photo's file, uploaded by the client (gradio_client: handle_file(path); @gradio/client: a "
                  "Blob or File). Links are refused: the app never fetches one.")
# the API page's example: its snippets turn a file reference's "url" into handle_file('photo.jpg')
EXAMPLE_FILE = {"path": "photo.jpg", "url": "photo.jpg", "meta": {"_type": "gradio.FileData"}, "orig_name": "photo.jpg"}


def without_links(schema):
    """A component's API schema with each description that offers a URL saying to send the file instead."""
    if isinstance(schema, dict):
        return {key: SENT_AS_A_FILE if key == "description" and isinstance(value, str) and "url" in value.lower()
                else without_links(value) for key, value in schema.items()}
    return [without_links(item) for item in schema] if isinstance(schema, list) else schema


def is_link(payload) -> bool:
    """Whether a file reference names a link, not an upload (a link sent as a stream stays one)."""
    return is_http_url_like(str(payload.path))


def files_only(component: gr.components.Component) -> gr.components.Component:
    """`component`, made to hand the handler LINK_STAND_IN in place of any photo given as a link,
    to refuse values that are not file references, and to say so on the API page.

    Given a URL, Gradio would download it with no size or time limit, holding the one request
    slot meanwhile: the upload limit would not apply. A link sent as a stream is not downloaded
    but reaches the handler as it is.
    (Instance overrides: a subclass would make Gradio write an app.pyi stub here.)
    """
    move_to_cache = component.async_move_resource_to_block_cache

    async def refuse(url_or_file_path):
        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            return LINK_STAND_IN
        return await move_to_cache(url_or_file_path)

    component.async_move_resource_to_block_cache = refuse
    component.data_model = FilesOnly(component.data_model)
    # the API page and its snippets: Gradio's own offer a link (handle_file('https://.../bus.png'))
    schema, many = without_links(component.api_info()), isinstance(component.example_payload(), list)
    component.api_info = lambda: schema
    component.example_payload = lambda: [EXAMPLE_FILE] if many else EXAMPLE_FILE
    component.example_value = lambda: [EXAMPLE_FILE["path"]] if many else EXAMPLE_FILE["path"]
    return component


def photo_input() -> gr.Image:
    """gr.Image that passes the uploaded file's path on unopened, and refuses links.

    gr.Image opens uploads with PIL before the function runs, so a non-image or a decompression
    bomb would fail there with Gradio's generic "Error"; load_image says what is wrong instead.
    """
    image = gr.Image(label="Photo", height=PHOTO_HEIGHT)
    image.preprocess = lambda payload: None if payload is None else LINK_STAND_IN if is_link(payload) else payload.path
    return files_only(image)


def photo_files_input() -> gr.File:
    """gr.File for several photos, passing their paths on as they are, and refusing links.

    Its own preprocessing would refuse the whole request for one file of an unexpected type (and
    leave an empty temporary file behind for each file); load_image judges each photo instead.
    """
    files = gr.File(label="Photos", file_count="multiple", file_types=["image"])
    files.preprocess = lambda payload: None if payload is None else [
        LINK_STAND_IN if is_link(f) else f.path for f in payload]
    return files_only(files)


def beam_size(value) -> int:
    """`value` as a beam size: a whole number from 1 to MAX_BEAM_SIZE (3.0 is 3; 2.5, "abc" and None are refused)."""
    whole = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value == int(value)
    if not whole or not 1 <= value <= MAX_BEAM_SIZE:
        shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:20] + "..."
        raise gr.Error(f"The beam size must be a whole number from 1 to {MAX_BEAM_SIZE}, not {shown}.",
                       print_exception=False)
    return int(value)


def beam_slider() -> gr.Slider:
    """The beam size, checked by beam_size in place of the slider's own check (which lets 2.5
    through as 2, and answers "abc" with a traceback)."""
    slider = gr.Slider(1, MAX_BEAM_SIZE, value=DEFAULT_BEAM_SIZE, step=1, precision=0, label="Beam size",
                       info="how many candidate sentences the search keeps")
    slider.preprocess = beam_size
    return slider

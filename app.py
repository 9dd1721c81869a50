"""The Flickr8k captioner as a Gradio app; also the Hugging Face Space's entry point.

  python app.py [--host 0.0.0.0] [--port 7860]

The model comes from --model (a model folder or a Hub repo id), else the Hub repo in
$CAPTION_MODEL_REPO, else weights/ (see pipeline/model_source.py).
Its image encoder is the one exported into the model folder (OpenVINO: no TensorFlow needed);
--encoder keras (or $CAPTION_ENCODER) runs the Keras backbone instead, from
$CAPTION_BACKBONE_WEIGHTS or Keras' ImageNet download (requirements-train.txt). Gradio's own
variables (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, ...) work as usual.
"""
import argparse
import logging
import os
import tempfile
from pathlib import Path

from pipeline.gradio_stubs import skip_stub_generation

# Gradio reports usage to its makers unless told not to: the operator opts in, users are not asked
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
skip_stub_generation()  # a third of the start-up, for editors' type stubs (pipeline/gradio_stubs.py)
import gradio as gr  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from pipeline import Captioner, model_source  # noqa: E402
from pipeline.batch import caption_in_slices, load_pixels  # noqa: E402
from pipeline.files import atomic_path  # noqa: E402
from pipeline.hub import LOCAL_WEIGHTS, describe_weights  # noqa: E402
from pipeline.images import ImageError  # noqa: E402
from pipeline.model_source import ModelError, add_model_arguments  # noqa: E402
from pipeline.records import Csv  # noqa: E402
from pipeline.logs import log_to_stderr  # noqa: E402
from serving.inputs import LINK_STAND_IN, NO_LINKS, beam_slider, photo_files_input, photo_input  # noqa: E402
from serving.memory import give_back_freed_memory  # noqa: E402
from serving.request_limits import RequestLimits  # noqa: E402
from serving.uploads import DELETE_UPLOADS, MAX_UPLOAD_BYTES, CountedUploads, read_upload  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent / "examples"
# One request of each tab at a time: the encoder already spreads one image over both cores, so a
# second request of a tab would only make both slower; the queue holds the rest. A batch and a
# photo may run side by side: the batch takes the encoder a slice at a time (BATCH_SLICE), so the
# photo waits for one slice, not for the whole batch.
CONCURRENCY_LIMIT, QUEUE_SIZE = 1, 32
PHOTO_QUEUE, BATCH_QUEUE = "photo", "batch"
# A batch request holds its tab for all its photos while the queue waits: a cap keeps that short
MAX_BATCH_PHOTOS = 32
# Photos decoded, encoded and searched together in a batch: what a batch holds in memory at most
# beyond a single photo's request, and the longest a photo's request waits for the encoder
BATCH_SLICE = 8
# What one request may carry (serving/request_limits.py): a batch of MAX_BATCH_PHOTOS references
# is about 20 KB of JSON; uploads, MAX_BATCH_PHOTOS files at the upload limit
MAX_REQUEST_BYTES = 256 * 1024
MAX_UPLOAD_REQUEST_BYTES = MAX_BATCH_PHOTOS * MAX_UPLOAD_BYTES + 2**20
BATCH_COLUMNS = ["file", "caption", "error"]

# beside a caption of a photo whose features are far from every training photo's (pipeline/familiarity.py)
UNFAMILIAR_NOTE = ("This photo looks unlike the photos the model learnt from (mostly people, dogs and outdoor "
                   "scenes), so the caption may well be wrong.")

DESCRIPTION = """Upload a photo and get a one-sentence English description. An Xception image encoder
and an LSTM decoder trained on the 6,000 training photos of [Flickr8k](https://doi.org/10.1613/jair.3994):
it knows people, dogs and outdoor scenes best. A larger beam size weighs more candidate sentences; the
table lists the best ones with the probability the model gives each. Photos are not logged, and the
server deletes each one as soon as it is captioned."""
BATCH_DESCRIPTION = f"""Up to {MAX_BATCH_PHOTOS} photos at once: a row per photo with its caption, or why it has none,
and the table as a CSV file. The photos are deleted as soon as they are captioned; the CSV file (names
and captions) stays on the server for at most ten minutes. For thousands of photos, run `caption.py`."""


def photo_interface(captioner: Captioner, uploads: CountedUploads,
                    model_description: str | None = None) -> gr.Interface:
    """The first tab: one photo, its caption and the beam's best captions (/caption)."""

    def caption(image: str | None, beam_size: int):
        """The photo's best caption, and the beam's best captions with their probabilities."""
        if image is None:
            raise gr.Error("Upload a photo first.", print_exception=False)
        if image == LINK_STAND_IN:
            raise gr.Error(NO_LINKS, print_exception=False)
        try:
            # bytes, not the path: error messages then never show the server's upload folder
            description = captioner.describe(read_upload(Path(image)), beam_size)
        except ImageError as error:  # the user's file, not a fault: no traceback in the server's log
            raise gr.Error(f"Cannot caption this file: {error}", print_exception=False) from None
        finally:
            uploads.done_with(image)
            give_back_freed_memory()
        if description.unfamiliar:
            # a note shown on the page beside the caption, not an output: API callers get the same two values
            gr.Warning(UNFAMILIAR_NOTE, title="Unfamiliar photo")
        # sentence probabilities are tiny numbers: keep significant digits, not decimals
        return description.caption, [[c.text, float(f"{c.probability:.3g}")] for c in description.n_best]

    interface = gr.Interface(
        fn=caption,
        inputs=photo_input(),
        additional_inputs=beam_slider(),
        additional_inputs_accordion=gr.Accordion("Options", open=True),
        outputs=[gr.Textbox(label="Caption"),
                 gr.Dataframe(headers=["caption", "probability"], datatype=["str", "number"],
                              column_widths=["80%", "20%"], label="Best captions", interactive=False)],
        examples=[[str(path)] for path in sorted(EXAMPLES.glob("*.jpg"))],
        cache_examples=False,  # a click runs the model in well under a second; no start-up pass over them
        title="Flickr8k image captioner",
        description=DESCRIPTION,
        # which weights answer, for users and their bug reports
        article=f"Model: {model_description}." if model_description else None,
        api_name="caption",  # served as /caption; gradio_client and embeds rely on it
        concurrency_limit=CONCURRENCY_LIMIT,
        # people's own photos: flagging would save them on the server, so only the operator turns it on
        flagging_mode=os.environ.get("GRADIO_FLAGGING_MODE", "never"),
    )
    for event in interface.fns.values():
        if event.api_name == "caption":
            event.concurrency_id = PHOTO_QUEUE
    return interface


def batch_csv(rows: list[list[str]]) -> str:
    """The table as a CSV file in Gradio's cache, which serves it and deletes it with its sweep."""
    folder = Path(tempfile.mkdtemp(dir=get_upload_folder(), prefix="captions-"))
    with atomic_path(folder / "captions.csv") as tmp:
        tmp.write_text(Csv.header(BATCH_COLUMNS) + Csv.format([dict(zip(BATCH_COLUMNS, row)) for row in rows],
                                                                BATCH_COLUMNS), encoding="utf-8", newline="")
    return str(folder / "captions.csv")


def load_photo(photo: str):
    """A batch's photo as pixels, or why it has none (a link, too large, gone, not an image)."""
    if photo == LINK_STAND_IN:
        return NO_LINKS
    try:
        return load_pixels(read_upload(Path(photo)))
    except gr.Error as error:
        return error.message


def batch_tab(captioner: Captioner, uploads: CountedUploads) -> None:
    """The second tab: several photos at once, a table of their captions and that table as CSV (/caption_batch)."""

    def caption_batch(photos: list[str] | None, beam_size: int):
        """A row per photo: its name, its caption or why it has none; and the rows as a CSV file."""
        photos = photos or []
        try:
            if not photos:
                raise gr.Error("Upload some photos first.", print_exception=False)
            if len(photos) > MAX_BATCH_PHOTOS:
                raise gr.Error(f"At most {MAX_BATCH_PHOTOS} photos at a time, please: this request has "
                               f"{len(photos)}.", print_exception=False)
            results = caption_in_slices(captioner, photos, load_photo, beam_size, BATCH_SLICE)
        finally:
            for photo in photos:
                uploads.done_with(photo)
            give_back_freed_memory()
        names = ["(a link)" if photo == LINK_STAND_IN else Path(photo).name for photo in photos]
        rows = [[name, "", result] if isinstance(result, str) else [name, result.caption, ""]
                for name, result in zip(names, results)]
        return rows, batch_csv(rows)

    gr.Markdown(BATCH_DESCRIPTION)
    with gr.Row():
        with gr.Column():
            photos, beam_size = photo_files_input(), beam_slider()
            button = gr.Button("Caption them", variant="primary")
        with gr.Column():
            table = gr.Dataframe(headers=BATCH_COLUMNS, datatype=["str", "str", "str"], label="Captions",
                                 interactive=False)
            download = gr.DownloadButton("Download the table as CSV")
    button.click(caption_batch, [photos, beam_size], [table, download], api_name="caption_batch",
                 concurrency_limit=CONCURRENCY_LIMIT, concurrency_id=BATCH_QUEUE)


def build_demo(captioner: Captioner, model_description: str | None = None) -> gr.Blocks:
    """The app around `captioner`: a tab for one photo, one for many; `model_description`
    (pipeline.hub.describe_weights) goes in the footer."""
    uploads = CountedUploads(keep=EXAMPLES)  # both tabs' uploads: the same photo may be in a request of each
    # built outside the page: an Interface made inside a Blocks renders itself there, and again in its tab
    single = photo_interface(captioner, uploads, model_description)
    with gr.Blocks(title="Flickr8k image captioner", delete_cache=DELETE_UPLOADS) as demo:
        with gr.Tab("One photo"):
            single.render()
        with gr.Tab("Many photos"):
            batch_tab(captioner, uploads)
    demo.queue(max_size=QUEUE_SIZE)
    # the sweep iterates the same object, so it goes on seeing every upload; it takes the uploads'
    # set last, whose end removes the folders the sweep has emptied (serving/uploads.py)
    demo.temp_file_sets[:] = [files for files in demo.temp_file_sets if files is not demo.upload_file_set] + [uploads]
    demo.upload_file_set = uploads
    return demo


def start(model: str | Path | None = None, revision: str | None = None, encoder: str = "auto",
          fallback: Path = LOCAL_WEIGHTS) -> tuple[gr.Blocks, Captioner]:
    """Everything before serving: the model (pipeline/model_source.py), loaded once and warmed up so
    that the first request is as fast as the rest, and the page around it; exits with what to do
    when there is no usable model.

    (Loading in a thread while the page is built, or while Gradio is imported, saved 0.1 s of what
    was then a 3.4 s start-up at best: both sides hold the GIL most of the time.)
    """
    try:
        captioner, folder = model_source.load_model(model, revision, encoder, fallback)
    except ModelError as error:
        raise SystemExit(f"error: {error}") from None
    captioner.warm_up()
    return build_demo(captioner, describe_weights(folder)), captioner


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="address to listen on (default $GRADIO_SERVER_NAME, else 127.0.0.1; "
                   "0.0.0.0 for the network)")
    p.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT, else the first free from 7860)")
    p.add_argument("--weights", type=Path, default=LOCAL_WEIGHTS,
                   help="local model folder, used when neither --model nor $CAPTION_MODEL_REPO names a usable "
                        "model (default: weights/ beside app.py)")
    add_model_arguments(p)
    return p.parse_args(argv)


def serve(demo: gr.Blocks, host: str | None = None, port: int | None = None, **launch_options):
    """Start the server; `host`/`port` None leave the choice to Gradio's variables and defaults."""
    # run history would keep photos in the browser (or a connected bucket): the operator opts in
    run_history = os.environ.get("GRADIO_RUN_HISTORY", "false").lower() == "true"
    # httpx (Gradio's HTTP client) logs every URL it requests at INFO
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    limits = Middleware(RequestLimits, max_body_bytes=MAX_REQUEST_BYTES, max_file_references=MAX_BATCH_PHOTOS,
                        max_upload_bytes=MAX_UPLOAD_REQUEST_BYTES, on_refused=demo.upload_file_set.refused)
    return demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, run_history=run_history,
                       app_kwargs={"middleware": [limits]}, **launch_options)


def main(argv=None):
    args = parse_args(argv)
    log_to_stderr()
    demo, _ = start(args.model, args.revision, args.encoder, args.weights)
    serve(demo, args.host, args.port)


if __name__ == "__main__":
    main()

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
import os
import tempfile
import time
from pathlib import Path

from serving.gradio_stubs import skip_stub_generation
from serving.memory import limit_arenas

limit_arenas()  # before any thread of Gradio's or the encoder's starts (serving/memory.py)

# Gradio reports usage to its makers unless told not to: the operator opts in, users are not asked
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
skip_stub_generation()  # a third of the start-up, for editors' type stubs (serving/gradio_stubs.py)
import gradio as gr  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402

from pipeline import Captioner, model_source  # noqa: E402
from pipeline.batch import caption_in_slices  # noqa: E402
from pipeline.beam_search import MAX_BEAM_SIZE  # noqa: E402
from pipeline.captioner import Failure  # noqa: E402
from pipeline.cli import DeprecatedAlias, add_model_arguments, run_main  # noqa: E402
from pipeline.files import atomic_path  # noqa: E402
from pipeline.model_source import LOCAL_WEIGHTS, ModelError  # noqa: E402
from pipeline.records import Csv  # noqa: E402
from serving.admission import ServiceTimes, admit_by_wait  # noqa: E402
from serving.heatmaps import NO_ATTENTION, as_json, shown_photo, spotlight, word_choices  # noqa: E402
from serving.inputs import LINK_STAND_IN, beam_slider, photo_files_input, photo_input  # noqa: E402
from serving.server import count_uploads, launch  # noqa: E402
from serving.tabs import TabRequests  # noqa: E402
from serving.uploads import DELETE_UPLOADS, MAX_UPLOAD_BYTES, CountedUploads  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent / "examples"
# One request of each tab at a time: the encoder already spreads one image over both cores, so a
# second request of a tab would only make both slower; the queue holds the rest. A batch and a
# photo may run side by side: the batch takes the encoder a slice at a time (BATCH_SLICE), so the
# photo waits for one slice, not for the whole batch.
CONCURRENCY_LIMIT = 1
# Requests join while the wait they would have stays under MAX_WAIT_S (serving/admission.py); the
# queue's own bound is only a backstop on what waiting requests hold
MAX_WAIT_S, QUEUE_SIZE = 30, 1000
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
BATCH_COLUMNS = ["file", "caption", "familiarity", "unfamiliar", "error"]
API_PHOTO_NOTE = ("Send the photo's file (gradio_client: handle_file(path); @gradio/client: a Blob or File): the "
                  f"app never fetches a link. The beam size is a whole number from 1 to {MAX_BEAM_SIZE}.")

# beside a caption of a photo whose features are far from every training photo's (pipeline/familiarity.py)
UNFAMILIAR_NOTE = ("This photo looks unlike the photos the model learnt from (mostly people, dogs and outdoor "
                   "scenes), so the caption may well be wrong.")

TITLE = "Flickr8k image captioner"
DESCRIPTION = """Upload a photo and get a one-sentence English description. An Xception image encoder
and an LSTM decoder trained on the 6,000 training photos of [Flickr8k](https://doi.org/10.1613/jair.3994):
it knows people, dogs and outdoor scenes best, and says so when a photo is unlike them. A larger beam
size weighs more candidate sentences; the bars show the best ones, each with its share of their
probability. Photos are not logged, and the server deletes each one as soon as it is captioned."""
# the caption reads as the page's answer, and the note stands out beside it (and takes no room when empty)
CSS = """#caption textarea { font-size: 1.6rem; line-height: 1.35; font-weight: 600; }
#familiarity-note { border-left: 4px solid #d97706; padding-left: 0.75rem; }
#familiarity-note:empty, #familiarity-note:has(.prose:empty) { display: none; }
"""
BATCH_DESCRIPTION = f"""Up to {MAX_BATCH_PHOTOS} photos at once: a row per photo with its caption, or why it has none,
and the table as a CSV file. The photos are deleted as soon as they are captioned; the CSV file (names
and captions) stays on the server for at most ten minutes. For thousands of photos, run `caption.py`."""


def probability_shares(description) -> dict[str, float]:
    """The best captions as a person reads them: each one's share of the probability the list holds
    (the model's own probabilities of whole sentences are tiny numbers such as 5.3e-8)."""
    total = sum(c.probability for c in description.n_best) or 1.0
    return {c.text: c.probability / total for c in description.n_best}


def familiarity_note(description) -> str:
    """The note beside a caption: said only of a photo unlike the training photos."""
    return f"**Unfamiliar photo.** {UNFAMILIAR_NOTE}" if description.unfamiliar else ""


def photo_tab(captioner: Captioner, requests: TabRequests) -> None:
    """The first tab: one photo; its caption, the familiarity note, the beam's best captions, and
    where the model looked for each word (/caption, /describe, /where_it_looked)."""
    looks = captioner.looks_at_regions

    def read_and_describe(image: str | None, beam_size: int):
        """The photo's bytes and its Description (caption, n-best, familiarity)."""
        if image is None:
            raise gr.Error("Upload a photo first.", print_exception=False)
        with requests.releasing([image]), requests.users_file():
            photo = requests.photo_bytes(image)
            with requests.timed(PHOTO_QUEUE):
                return photo, captioner.describe(photo, beam_size)

    def caption(image: str | None, beam_size: int):
        """The photo's best caption, and the beam's best captions with their probabilities."""
        photo, description = read_and_describe(image, beam_size)
        # sentence probabilities are tiny numbers: keep significant digits, not decimals
        table = [[c.text, float(f"{c.probability:.3g}")] for c in description.n_best]
        # the heat maps come from the search that chose the caption: no second pass
        with requests.users_file():
            shown = shown_photo(photo) if looks else None
        return description.caption, table, (description, shown)

    def said(described):
        """What the page shows beside the caption once it is there: the note, the shares and, from an
        attention model, the word selector on the caption's first word and its spotlight. The caption's
        state is emptied; the word selector's keeps the shown photo and the maps."""
        description, shown = described
        shown_words = ()
        if looks:
            best = description.n_best[0]
            choices = word_choices(best)
            shown_words = ((shown, best), gr.update(choices=choices, value=choices[0] if choices else None),
                           spotlight(shown, best.looked[0]) if choices else None)
        return familiarity_note(description), probability_shares(description), None, *shown_words

    def show_word(choice: str | None, looked):
        """The spotlight on where the model looked for the chosen word ("3. dog" is the third)."""
        if not choice or looked is None:
            return None
        shown, best = looked
        return spotlight(shown, best.looked[int(choice.split(".")[0]) - 1])

    def describe_api(image: str | None, beam_size: int) -> dict:
        """caption, familiarity (0-1: the share of dev photos at least as far from the training
        photos; null for a model without the calibration), unfamiliar, and the best captions."""
        _, description = read_and_describe(image, beam_size)
        return {"caption": description.caption, "familiarity": description.familiarity,
                "unfamiliar": description.unfamiliar,
                "best": [{"caption": c.text, "probability": c.probability} for c in description.n_best]}

    def where_it_looked_api(image: str | None, beam_size: int) -> dict:
        """caption, its words, and for each word the attention weights over the photo's grid of
        regions (rows x columns, summing to 1) that the beam chose it with."""
        if not looks:
            raise gr.Error(NO_ATTENTION, print_exception=False)
        _, description = read_and_describe(image, beam_size)
        return as_json(description.n_best[0])

    with gr.Row(equal_height=False):
        with gr.Column():
            photo = photo_input()
            beam_size = beam_slider()
            with gr.Row():
                clear = gr.ClearButton(value="Clear")
                submit = gr.Button("Caption it", variant="primary")
        with gr.Column():
            caption_box = gr.Textbox(label="Caption", elem_id="caption", lines=2, interactive=False)
            note = gr.Markdown(elem_id="familiarity-note")
            shares = gr.Label(label="Best captions: each one's share of their probability", elem_id="best-captions",
                              show_heading=False)
            # /caption's second output, as API callers have always had it; the page shows `shares`
            best = gr.Dataframe(headers=["caption", "probability"], datatype=["str", "number"], visible=False,
                                label="Best captions", interactive=False)
            # where it looked for each word, or (said once) why this model cannot show it
            if looks:
                with gr.Group(elem_id="where-it-looked"):
                    word = gr.Radio([], label="Where it looked for the word", elem_id="looked-word")
                    lit = gr.Image(label="The photo, lit where the model looked", interactive=False,
                                   show_label=False, elem_id="looked-photo", height=300)
            else:
                gr.Markdown(NO_ATTENTION, elem_id="where-it-looked")
    gr.Examples([[str(path)] for path in sorted(EXAMPLES.glob("*.jpg"))], inputs=[photo])
    described = gr.State()
    # Clear empties the photo and what was said of it; the options stay as they were
    looked = gr.State()
    shown_words = [looked, word, lit] if looks else []
    clear.add([photo, caption_box, note, shares, best, *shown_words])
    # what was said of a photo stays until the next photo
    photo.change(lambda: ("", "", None) + (None,) * len(shown_words), None, [caption_box, note, shares, *shown_words],
                 api_visibility="private", queue=False)
    submit.click(caption, [photo, beam_size], [caption_box, best, described], api_name="caption",
                 api_description=API_PHOTO_NOTE, concurrency_limit=CONCURRENCY_LIMIT, concurrency_id=PHOTO_QUEUE
                 ).success(said, described, [note, shares, described, *shown_words], api_visibility="private",
                           queue=False)
    if looks:
        word.change(show_word, [word, looked], lit, api_visibility="private", queue=False)
    with gr.Column(visible=False):  # /describe: the same photo and beam size in, JSON out
        api_photo, api_beam, api_out = photo_input(), beam_slider(), gr.JSON(label="Description")
        gr.Button().click(describe_api, [api_photo, api_beam], api_out, api_name="describe",
                          api_description="The caption with the photo's familiarity. " + API_PHOTO_NOTE,
                          concurrency_limit=CONCURRENCY_LIMIT, concurrency_id=PHOTO_QUEUE)
        gr.Button().click(where_it_looked_api, [api_photo, api_beam], gr.JSON(label="Where it looked"),
                          api_name="where_it_looked",
                          api_description="Where the model looked for each word of the caption. " + API_PHOTO_NOTE,
                          concurrency_limit=CONCURRENCY_LIMIT, concurrency_id=PHOTO_QUEUE)
    flagging([photo, beam_size, caption_box])


def flagging(components: list) -> None:
    """A Flag button saving the photo and its caption under .gradio/flagged/, only where the
    operator sets GRADIO_FLAGGING_MODE=manual: people's own photos are not kept otherwise."""
    if os.environ.get("GRADIO_FLAGGING_MODE", "never") != "manual":
        return
    logger = gr.CSVLogger()
    logger.setup(components, Path(".gradio") / "flagged")
    gr.Button("Flag").click(lambda *values: logger.flag(list(values)) and None, components, None,
                            preprocess=False, api_visibility="private")


def batch_csv(rows: list[list[str]]) -> str:
    """The table as a CSV file in Gradio's cache, which serves it and deletes it with its sweep."""
    folder = Path(tempfile.mkdtemp(dir=get_upload_folder(), prefix="captions-"))
    with atomic_path(folder / "captions.csv") as tmp:
        tmp.write_text(Csv.header(BATCH_COLUMNS) + Csv.format([dict(zip(BATCH_COLUMNS, row)) for row in rows],
                                                                BATCH_COLUMNS), encoding="utf-8", newline="")
    return str(folder / "captions.csv")


def batch_row(name: str, result) -> list:
    """A batch table's row: the file, its caption, familiarity (0-1, blank without a calibration)
    and whether it is unfamiliar ("yes"/"no"), or why it has no caption."""
    if isinstance(result, Failure):
        return [name, "", None, "", result.reason]
    familiarity = None if result.familiarity is None else round(result.familiarity, 3)
    unfamiliar = "" if result.familiarity is None else "yes" if result.unfamiliar else "no"
    return [name, result.caption, familiarity, unfamiliar, ""]


def batch_tab(captioner: Captioner, requests: TabRequests) -> None:
    """The second tab: several photos at once, a table of their captions and that table as CSV (/caption_batch)."""

    def caption_batch(photos: list[str] | None, beam_size: int):
        """A row per photo: its name, its caption or why it has none; and the rows as a CSV file."""
        photos = photos or []
        with requests.releasing(photos):
            if not photos:
                raise gr.Error("Upload some photos first.", print_exception=False)
            if len(photos) > MAX_BATCH_PHOTOS:
                raise gr.Error(f"At most {MAX_BATCH_PHOTOS} photos at a time, please: this request has "
                               f"{len(photos)}.", print_exception=False)
            with requests.timed(BATCH_QUEUE):
                results = caption_in_slices(captioner, photos,
                                            lambda photo: requests.pixels_or_failure(captioner, photo),
                                            beam_size, BATCH_SLICE)
        names = ["(a link)" if photo == LINK_STAND_IN else Path(photo).name for photo in photos]
        rows = [batch_row(name, result) for name, result in zip(names, results)]
        return rows, batch_csv(rows)

    gr.Markdown(BATCH_DESCRIPTION)
    with gr.Row():
        with gr.Column():
            photos, beam_size = photo_files_input(), beam_slider()
            button = gr.Button("Caption them", variant="primary")
        with gr.Column():
            table = gr.Dataframe(headers=BATCH_COLUMNS, datatype=["str", "str", "number", "str", "str"],
                                 label="Captions", interactive=False, wrap=True, elem_id="batch-table",
                                 column_widths=["22%", "34%", "14%", "12%", "18%"])
            download = gr.DownloadButton("Download the table as CSV")
    button.click(caption_batch, [photos, beam_size], [table, download], api_name="caption_batch",
                 api_description=f"At most {MAX_BATCH_PHOTOS} photos. " + API_PHOTO_NOTE,
                 concurrency_limit=CONCURRENCY_LIMIT, concurrency_id=BATCH_QUEUE)


def build_demo(captioner: Captioner, model_description: str | None = None, seconds_per_photo: float = 1.0) -> gr.Blocks:
    """The app around `captioner`: a tab for one photo, one for many; `model_description`
    (pipeline.model_source.ModelLocation.describe) goes in the footer; `seconds_per_photo`, what a
    request is taken to cost until the queue has measured it."""
    uploads = CountedUploads(keep=EXAMPLES)
    times = ServiceTimes(first_guess_s=seconds_per_photo)
    requests = TabRequests(uploads, times)
    with gr.Blocks(title=TITLE, delete_cache=DELETE_UPLOADS) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        with gr.Tab("One photo"):
            photo_tab(captioner, requests)
        with gr.Tab("Many photos"):
            batch_tab(captioner, requests)
        if model_description:  # which weights answer, for users and their bug reports
            gr.Markdown(f"Model: {model_description}.")
    demo.queue(max_size=QUEUE_SIZE)
    admit_by_wait(demo, MAX_WAIT_S, times)
    count_uploads(demo, uploads)
    return demo


def start(model: str | Path | None = None, revision: str | None = None, encoder: str = "auto",
          fallback: Path = LOCAL_WEIGHTS) -> tuple[gr.Blocks, Captioner]:
    """Everything before serving: the model (pipeline/model_source.py), loaded once and warmed up so
    that the first request is as fast as the rest, and the page around it; exits with what to do
    when there is no usable model.

    (Loading in a thread while the page is built, or while Gradio is imported, saved 0.1 s of what
    was then a 3.4 s start-up at best: both sides hold the GIL most of the time.)
    """
    with run_main(ModelError):
        captioner, location = model_source.load_model(model, revision, encoder, fallback)
    captioner.warm_up()
    started = time.perf_counter()  # a second pass costs what a request will: the queue's first guess
    captioner.warm_up()
    return build_demo(captioner, location.describe(), time.perf_counter() - started), captioner


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="address to listen on (default $GRADIO_SERVER_NAME, else 127.0.0.1; "
                   "0.0.0.0 for the network)")
    p.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT, else the first free from 7860)")
    p.add_argument("--fallback-model", type=Path, default=LOCAL_WEIGHTS,
                   help="local model folder, used when neither --model nor $CAPTION_MODEL_REPO names a usable "
                        "model (default: weights/ beside app.py)")
    p.add_argument("--weights", type=Path, dest="fallback_model", action=DeprecatedAlias, new="--fallback-model")
    add_model_arguments(p)
    return p.parse_args(argv)


def serve(demo: gr.Blocks, host: str | None = None, port: int | None = None, **launch_options):
    """Start the server (serving/server.py); `host`/`port` None leave the choice to Gradio's variables and defaults."""
    return launch(demo, host, port, max_request_bytes=MAX_REQUEST_BYTES, max_file_references=MAX_BATCH_PHOTOS,
                  max_upload_request_bytes=MAX_UPLOAD_REQUEST_BYTES, css=CSS, **launch_options)


def main(argv=None):
    args = parse_args(argv)
    demo, _ = start(args.model, args.revision, args.encoder, args.fallback_model)
    serve(demo, args.host, args.port)


if __name__ == "__main__":
    main()

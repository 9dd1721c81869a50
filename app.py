"""The Flickr8k captioner as a Gradio app; also the Hugging Face Space's entry point.

  python app.py [--host 0.0.0.0] [--port 7860]

The model comes from the Hub repo in $CAPTION_MODEL_REPO, else weights/ (see pipeline/hub.py);
the Xception backbone from $CAPTION_BACKBONE_WEIGHTS, else Keras' ImageNet download. Gradio's
own variables (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, ...) work as usual.
"""
import argparse
import logging
import os
from pathlib import Path

import pipeline  # noqa: F401  (sets TensorFlow's log level before it loads)
import gradio as gr

from pipeline import ArtifactError, Captioner
from pipeline.encoder import BACKBONE_WEIGHTS_ENV, ImageEncoder
from pipeline.hub import HOW_TO_GET_WEIGHTS, LOCAL_WEIGHTS, NoWeightsError, resolve_weights
from pipeline.images import ImageError

EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_BEAM = 10  # beam_search's limit
# One request at a time: TensorFlow already spreads one image over both cores, so a second
# request would only make both slower. The queue holds the rest.
CONCURRENCY_LIMIT, QUEUE_SIZE = 1, 32
MAX_UPLOAD = "20mb"
# Gradio must write uploads to its temporary folder to hand them over; delete them every
# minute once 10 minutes old (long enough to re-run a photo with another beam size), and all
# of them at shutdown.
DELETE_UPLOADS = (60, 600)

DESCRIPTION = """Upload a photo and get a one-sentence English description. An Xception image encoder
and an LSTM decoder trained on the 6,000 training photos of [Flickr8k](https://doi.org/10.1613/jair.3994):
it knows people, dogs and outdoor scenes best. A larger beam size weighs more candidate sentences; the
table lists the best ones with the probability the model gives each. Photos are not logged, and the
server deletes them within minutes."""


def photo_input() -> gr.Image:
    """gr.Image that passes the uploaded file's path on unopened.

    gr.Image opens uploads with PIL before the function runs, so a non-image or a decompression
    bomb would fail there with Gradio's generic "Error"; load_image says what is wrong instead.
    (An instance override: a gr.Image subclass would make Gradio write an app.pyi stub here.)
    """
    image = gr.Image(label="Photo")
    image.preprocess = lambda payload: None if payload is None else payload.path
    return image


def build_demo(captioner: Captioner) -> gr.Interface:
    def caption(image: str | None, beam_size: int):
        """The photo's best caption, and the beam's best captions with their probabilities."""
        if image is None:
            raise gr.Error("Upload a photo first.", print_exception=False)
        try:
            # bytes, not the path: error messages then never show the server's upload folder
            best = captioner.generate([Path(image).read_bytes()], beam_size, n_best=beam_size)[0]
        except ImageError as error:  # the user's file, not a fault: no traceback in the server's log
            raise gr.Error(f"Cannot caption this file: {error}", print_exception=False) from None
        # sentence probabilities are tiny numbers: keep significant digits, not decimals
        return best[0].text, [[c.text, float(f"{c.probability:.3g}")] for c in best]

    return gr.Interface(
        fn=caption,
        inputs=photo_input(),
        additional_inputs=gr.Slider(1, MAX_BEAM, value=3, step=1, precision=0, label="Beam size",
                                    info="how many candidate sentences the search keeps"),
        additional_inputs_accordion=gr.Accordion("Options", open=True),
        outputs=[gr.Textbox(label="Caption"),
                 gr.Dataframe(headers=["caption", "probability"], datatype=["str", "number"],
                              column_widths=["80%", "20%"], label="Best captions", interactive=False)],
        examples=[[str(path)] for path in sorted(EXAMPLES.glob("*.jpg"))],
        cache_examples=False,  # a click runs the model in well under a second; no start-up pass over them
        title="Flickr8k image captioner",
        description=DESCRIPTION,
        api_name="caption",  # served as /caption; gradio_client and embeds rely on it
        concurrency_limit=CONCURRENCY_LIMIT,
        # people's own photos: flagging would save them on the server, so only the operator turns it on
        flagging_mode=os.environ.get("GRADIO_FLAGGING_MODE", "never"),
        delete_cache=DELETE_UPLOADS,
    ).queue(max_size=QUEUE_SIZE)


def load_captioner(local_weights: Path) -> Captioner:
    """The model, once, at start-up; exits with what to do when there is none."""
    try:
        folder = resolve_weights(local_weights)
    except NoWeightsError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        encoder = ImageEncoder()
    except Exception as error:  # a missing weights file, or Keras' bare Exception when its download fails
        raise SystemExit(f"error: could not build the Xception backbone: {error}\nOffline, point "
                         f"{BACKBONE_WEIGHTS_ENV} at a local weights file (README.md, 'Offline backbone "
                         "weights').") from None
    try:
        return Captioner.from_pretrained(folder, image_encoder=encoder)
    except ArtifactError as error:
        raise SystemExit(f"error: {error}\nTo get usable weights, {HOW_TO_GET_WEIGHTS}.") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="address to listen on (default $GRADIO_SERVER_NAME, else 127.0.0.1; "
                   "0.0.0.0 for the network)")
    p.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT, else the first free from 7860)")
    p.add_argument("--weights", type=Path, default=LOCAL_WEIGHTS,
                   help="local model folder, used when $CAPTION_MODEL_REPO is unset or unreachable "
                        "(default: weights/ beside app.py)")
    return p.parse_args(argv)


def serve(demo: gr.Interface, host: str | None = None, port: int | None = None, **launch_options):
    """Start the server; `host`/`port` None leave the choice to Gradio's variables and defaults."""
    # run history would keep photos in the browser (or a connected bucket): the operator opts in
    run_history = os.environ.get("GRADIO_RUN_HISTORY", "false").lower() == "true"
    return demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, run_history=run_history,
                       **launch_options)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(build_demo(load_captioner(args.weights)), args.host, args.port)


if __name__ == "__main__":
    main()

"""Measure the captioner's speed and memory against the original approach (see README.md, "Performance").

  python bench.py --data ../shared/flickr8k --model weights --json b.json

One process, real test-split images and the trained model in --model:
  * encoder: latency at batch 1 (p50, p90) and images/s at batch 32 (the compiled Xception)
  * decoder: latency per caption from Xception features, greedy and beam 3 and 5
  * end to end: Captioner.caption, file in and text out, beam 3
  * the original approach with the same trained model: Xception through model.predict, then
    model.predict once per word on the whole padded prefix, each word found by scanning the
    vocabulary; the end-to-end speed-up is the ratio of total times on the same images, its
    greedy captions against our beam 3 (original_matches_greedy: how often its loop and our
    greedy search write the same caption from the same features; it may emit <unk>, ours not)
  * training: our sequence-level tf.data pipeline against the original one (one sample per
    caption prefix, padded to the longest caption, one-hot targets, an LSTM returning its last
    state and a softmax), on the same captions, in captions/s and words/s
  * caption_batch at batch 32 against captioning the same images one by one
  * serving without TensorFlow: the model folder's exported encoder (OpenVINO) against
    the Keras path, side by side: encoder and end-to-end latency in fresh processes that take
    turns (--rounds); the app's start-up to its first caption and peak resident memory for each,
    likewise (the app_* figures are the Keras path's); and with --install-size the size of
    a fresh virtual environment from requirements.txt against one that adds TensorFlow and Keras
    (what the Space installed before); the ratios are exported / Keras
Prints a table with the targets and writes everything to --json. Timings are
only reported, never asserted; the machine should be otherwise idle while this runs.

  python bench.py --throughput 1000 --json t.json

measures batch captioning instead, and only that, on the first N test images with the
exported encoder (no TensorFlow): the encoder alone on pixel batches decoded beforehand (its
ceiling: the figure caption.py is held to), then caption.py's local engine and its Ray engine on
the same files, each from the photo files to the records in a file, the model already loaded
(Ray: already started, its actors loading the model inside the timing). The encoder alone and the
local engine take turns, a few batches each; the ratios are images/s over the encoder's; the
target is local >= 0.9x.
"""
import argparse

import pipeline  # noqa: F401  (first: it sets NumPy's and TensorFlow's environment)
from benchmarks import ROOT, serving_modes, suite, throughput  # the measurements; this file is their command line
from pipeline.cli import add_backbone_argument, add_beam_argument, add_cache_argument, add_model_folder_argument
from pipeline.formats import add_data_arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_folder_argument(p, "weights", "the model folder to measure", former="--weights")
    add_backbone_argument(p)
    add_cache_argument(p)
    p.add_argument("--json", metavar="OUT", help="write the measurements here")
    # not --images: that names the dataset's image root (add_data_arguments)
    p.add_argument("--latency-images", type=int, default=40, help="test images timed for each latency (default 40)")
    p.add_argument("--original-images", type=int, default=10,
                   help="test images captioned the original way (default 10; about 0.8 s each)")
    p.add_argument("--train-captions", type=int, default=1000,
                   help="training captions for the throughput comparison (default 1000)")
    add_beam_argument(p, " of the end-to-end timings")
    p.add_argument("--rounds", type=int, default=2,
                   help="turns each serving path (Keras, exported) takes, in fresh processes (default 2)")
    p.add_argument("--baseline-model", metavar="FOLDER",
                   help="also time this model folder's exported path end to end, taking turns with --model's, "
                        "for the ratio of --model's app path to it (for example the weights/ it replaces: "
                        "mkdir before && git archive COMMIT weights | tar -x -C before --strip-components=1)")
    p.add_argument("--install-size", action="store_true",
                   help="also build two fresh virtual environments (requirements.txt, and requirements.txt plus "
                        "TensorFlow and Keras) and compare their sizes; needs the package registry or pip's cache")
    p.add_argument("--throughput", type=int, metavar="N",
                   help="measure only batch captioning on the first N test images (see above)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the --throughput figures (default 32)")
    p.add_argument("--serving-modes", action="store_true",
                   help="measure only whether Gradio's batch=True or OpenVINO's THROUGHPUT hint would serve bursts "
                        "of single photos faster than one request at a time (see benchmarks/serving_modes.py)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2 images, 1 original caption, 20 training captions, 1 round (for tests)")
    add_data_arguments(p, default=str(ROOT.parent / "shared" / "flickr8k"))
    args = p.parse_args(argv)
    if args.quick:
        args.latency_images, args.original_images, args.train_captions, args.rounds = 2, 1, 20, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.throughput:
        return throughput.run(args)
    if args.serving_modes:
        return serving_modes.run(args)
    return suite.run(args)


if __name__ == "__main__":
    main()

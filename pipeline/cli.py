"""Command-line arguments that several entry points share, defined once, and how each main() ends on an error.

Every entry point names the same things the same way: --model (the model folder, or a Hub repo
where one can be read from the Hub), --revision, --encoder, --backbone-weights, --cache-dir,
--beam-size, --engine and --actors. A spelling that has been replaced still works and says so
on stderr (DeprecatedAlias).
"""
import argparse
import contextlib
import logging
import os
import sys

from .beam_search import DEFAULT_BEAM_SIZE, MAX_BEAM_SIZE
from .captioner import ENCODER_CHOICES
from .encoder import BACKBONE_WEIGHTS_ENV
from .feature_cache import CACHE_ENV
from .model_source import ENCODER_ENV, REPO_ENV, REVISION_ENV

ENGINES = ("local", "ray")


class DeprecatedAlias(argparse.Action):
    """An option's former spelling: stores into the new option's place, and says to use that one."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def beam_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BEAM_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BEAM_SIZE}, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser, former: str | None = None) -> None:
    """--model, --revision and --encoder: the model to caption with (pipeline.model_source.resolve_model).
    `former`: the option's old spelling in this entry point, still accepted."""
    parser.add_argument("--model", help=f"a local model folder or a Hugging Face Hub repo id (default: "
                        f"${REPO_ENV}, pinned by ${REVISION_ENV}, falling back to the local weights/ when it "
                        "is unset, or unpinned and unreachable)")
    if former:
        parser.add_argument(former, dest="model", action=DeprecatedAlias, new="--model")
    parser.add_argument("--revision", help="with a Hub repo: the branch, tag or commit (default: main)")
    parser.add_argument("--encoder", choices=ENCODER_CHOICES, default=os.environ.get(ENCODER_ENV, "auto"),
                        help=f"image encoder (default ${ENCODER_ENV}, else auto: the folder's exported encoder "
                             "when it has one, which is what the app serves; keras, the TensorFlow backbone it "
                             "was exported from)")


def add_model_folder_argument(parser: argparse.ArgumentParser, default: str, help: str,
                              former: str | None = None) -> None:
    """--model as a local model folder only (an entry point that reads one to train from, or writes into it)."""
    parser.add_argument("--model", default=default, help=f"{help} (default: {default})")
    if former:
        parser.add_argument(former, dest="model", action=DeprecatedAlias, new="--model")


def add_backbone_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone-weights", help="the Keras Xception's weights: 'imagenet' (Keras downloads them), "
                        "'none' (random, for tests) or a local .weights.h5 file (default "
                        f"${BACKBONE_WEIGHTS_ENV}, else imagenet)")


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", help=f"feature cache root (default ${CACHE_ENV}, else "
                        "~/.cache/flickr8k-captioner)")


def add_beam_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument("--beam-size", type=beam_size, default=DEFAULT_BEAM_SIZE,
                        help=f"beam search width{what}, 1 (greedy) to {MAX_BEAM_SIZE} (default {DEFAULT_BEAM_SIZE})")


def add_engine_arguments(parser: argparse.ArgumentParser, work: str) -> None:
    """--engine and --actors: where `work` (e.g. "the feature pass") runs."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help=f"where {work} runs: local, this process (default); ray, a Ray Data pipeline "
                             "(requirements-batch.txt) on a local Ray, or on the cluster that $RAY_ADDRESS names "
                             "(a cluster started by `ray start` also needs RAY_AUTH_MODE=token)")
    parser.add_argument("--actors", type=positive_int,
                        help="with --engine ray: model copies (actors), each loading the model once (default: one "
                             "per node of the cluster; the encoder uses all of its node's cores)")


@contextlib.contextmanager
def run_main(*expected: type[BaseException]):
    """An entry point's body: logs INFO and above to stderr; an `expected` error (bad input, no model, a cluster
    that cannot run it) ends the run with its one-line message and exit status 1, no traceback."""
    # INFO and above to stderr, each line naming its level and its logger
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        yield
    except expected as error:
        raise SystemExit(f"error: {error}") from None

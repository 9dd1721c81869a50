"""Command-line arguments that several entry points share, defined once."""
import argparse

ENGINES = ("local", "ray")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser, work: str) -> None:
    """--engine and --actors: where `work` (e.g. "the feature pass") runs."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help=f"where {work} runs: local, this process (default); ray, a Ray Data pipeline "
                             "(requirements-batch.txt) on a local Ray, or on the cluster that $RAY_ADDRESS names "
                             "(a cluster started by `ray start` also needs RAY_AUTH_MODE=token)")
    parser.add_argument("--actors", type=positive_int,
                        help="with --engine ray: model copies (actors), each loading the model once (default: one "
                             "per node of the cluster; the encoder uses all of its node's cores)")

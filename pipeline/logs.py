"""How the entry points log: INFO and above to stderr, each line naming its level and its logger."""
import logging


def log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

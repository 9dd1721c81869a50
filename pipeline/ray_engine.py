"""--engine ray: caption.py's records, and the feature pass of train.py, scst.py and evaluate.py,
from a Ray Data pipeline (requirements-batch.txt).

  paths -> decode and resize (Ray tasks, on the CPUs the actors leave)
        -> a batch through the model (an actor pool: each actor loads it once): caption.py's
           encoder and beam search, or the feature pass's encoder alone
        -> back to the driver, which writes them as batches come back: caption.py's output
           file, or the feature cache (so workers need no shared disk for it)

The driver writes the file itself (not Dataset.write_json, which writes a folder of parts) so
that the output and its resuming are those of the local engine. Without $RAY_ADDRESS, ray.init()
starts a local Ray; with it, it joins that cluster (a cluster started by `ray start` takes
RAY_AUTH_MODE=token, README "On a Ray cluster"). On a cluster the photos and a local model folder
must be on storage every node sees (a Hub model is fetched by each node); the pipeline package
travels with the job.
"""
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .batch import caption_record
from .beam_search import DEFAULT_BEAM_SIZE
from .captioner import Failure, preprocess
from .encoder import IMAGE_SIZE
from .encoder_runtimes import encoder_from_spec
from .model_source import ModelLocation, load_model

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
# Settings the workers need as the driver has them (the Keras encoder's backbone file, say)
FORWARDED_ENV_PREFIX = "CAPTION_"
# What each reserves for scheduling (the encoder itself uses all of its node's cores). An actor
# holding a whole CPU took all of a 1-CPU node, and the decoding tasks never ran: the run hung at
# 0 with no word. Half a CPU leaves room on any node. The two differ because Ray fuses operators
# whose resources match, and decoding fused into the actors would run between encoder passes
# instead of beside them.
ACTOR_CPUS, DECODE_CPUS = 0.5, 0.25
# Decoding tasks at once, per actor: the small CPU reservation would otherwise let Ray run six on
# two cores beside the encoder, which then ran at a third of its speed (bench.py --throughput)
DECODERS_PER_ACTOR = 2
STALL_WARNING_S = 60  # no batch back for this long: say what the cluster lacks


def connect(**init_options) -> None:
    """Start or join Ray (ray.init reads $RAY_ADDRESS), shipping this package to the workers."""
    import ray
    if ray.is_initialized():
        return
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    ray.init(runtime_env={"py_modules": [str(PACKAGE)], "env_vars": env_vars}, **init_options)


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pixels for each path; a photo that cannot be loaded gets zeros and its error message."""
    loaded = [preprocess(path, IMAGE_SIZE) for path in batch["path"]]
    blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return {"path": batch["path"],
            "pixels": np.stack([blank if isinstance(item, Failure) else item for item in loaded]),
            "error": np.array([item.reason if isinstance(item, Failure) else "" for item in loaded], dtype=object)}


class CaptionActor:
    """One copy of the model, loaded once; captions a decoded batch into records (JSON text)."""

    def __init__(self, model: str, revision: str | None, encoder: str, beam_size: int, n_best: int):
        self.captioner, _ = load_model(model, revision, encoder)
        self.beam_size, self.n_best = beam_size, n_best

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = [Failure(error) if error else pixels for pixels, error in zip(batch["pixels"], batch["error"])]
        results = self.captioner.describe_batch(loaded, self.beam_size, self.n_best)
        records = [caption_record(path, result, self.n_best) for path, result in zip(batch["path"], results)]
        return {"record": np.array([json.dumps(record) for record in records], dtype=object)}


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the pipeline as asked; the message says what to change."""


def alive_nodes() -> list[dict]:
    import ray
    return [node for node in ray.nodes() if node["Alive"]]


def default_actors() -> int:
    """One actor per node of the cluster, since the encoder spreads a batch over all of a node's cores."""
    return len(alive_nodes())


def check_fits(actors: int) -> None:
    """Refuse at once a pool that the cluster can never schedule, saying what to change."""
    cpus = [node["Resources"].get("CPU", 0) for node in alive_nodes()]
    fitting = sum(int((cpu - DECODE_CPUS) // ACTOR_CPUS) for cpu in cpus)
    if actors > fitting:
        raise ClusterError(f"--actors {actors} cannot run on this cluster: its {len(cpus)} node(s) have "
                           f"{', '.join(f'{c:g}' for c in cpus)} CPU(s), room for {fitting} actor(s) of "
                           f"{ACTOR_CPUS:g} CPU beside the decoding; use --actors {max(fitting, 1)} or add nodes")


class StallWarning:
    """Logs why, when no batch has come back for STALL_WARNING_S: the cluster's free resources
    against what the pipeline asks, rather than a silent wait."""

    def __init__(self, seconds: float = STALL_WARNING_S):
        self.seconds, self.last, self._stop = seconds, time.monotonic(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="ray-stall-warning")

    def _watch(self):
        import ray
        while not self._stop.wait(min(self.seconds, 10)):
            if time.monotonic() - self.last > self.seconds:
                log.warning("no batch has come back for %.0f s. Free on the cluster: %s; each actor takes %g CPU "
                            "and each decoding task %g. If nothing is free, fewer --actors or more nodes will "
                            "do; if actors are still starting, they may be loading the model.",
                            time.monotonic() - self.last, ray.available_resources(), ACTOR_CPUS, DECODE_CPUS)
                self.last = time.monotonic()

    def progressed(self):
        self.last = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def map_with_actors(paths: list[str], actor_class, constructor_kwargs: dict, *, batch_size: int,
                    actors: int | None) -> Iterator[dict[str, np.ndarray]]:
    """The batches that `actor_class` (on a pool of `actors`, default one per node) makes of the
    decoded `paths`, in the order they come back."""
    import ray

    connect()
    ray.data.DataContext.get_current().enable_progress_bars = False  # the entry points show their own
    actors = actors or default_actors()
    check_fits(actors)
    dataset = (ray.data.from_items([{"path": path} for path in paths])
               .map_batches(decode_batch, batch_size=batch_size, num_cpus=DECODE_CPUS,
                            concurrency=DECODERS_PER_ACTOR * actors)
               .map_batches(actor_class, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=ACTOR_CPUS, fn_constructor_kwargs=constructor_kwargs))
    with StallWarning() as watch:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            watch.progressed()
            yield batch


def caption_with_ray(location: ModelLocation, encoder: str, paths: list[str], write: Callable[[list[dict]], None], *,
                     batch_size: int = 32, beam_size: int = DEFAULT_BEAM_SIZE, n_best: int = 0,
                     actors: int | None = None) -> None:
    """Caption `paths` on Ray with the model at `location`, handing records to `write` as batches finish."""
    # A Hub snapshot is named by repo and commit, so every node fetches those very weights
    model, revision = ((location.repo_id, location.commit) if location.repo_id
                       else (str(location.folder.resolve()), None))
    kwargs = {"model": model, "revision": revision, "encoder": encoder, "beam_size": beam_size, "n_best": n_best}
    for batch in map_with_actors(paths, CaptionActor, kwargs, batch_size=batch_size, actors=actors):
        write([json.loads(record) for record in batch["record"]])


class EncodeActor:
    """One copy of an image encoder, built once from its spec (PixelEncoder.spec); features of a decoded batch."""

    def __init__(self, spec: dict):
        self.encoder = encoder_from_spec(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"path": batch["path"], "error": batch["error"],
                "features": self.encoder.encode_pixels(np.asarray(batch["pixels"], np.uint8))}


def encode_with_ray(encoder, paths: list[str], *, batch_size: int = 32,
                    actors: int | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """(paths, features) of each batch of `paths`, encoded on Ray by copies of `encoder`, as they
    come back; an image that cannot be read stops the pass, as it does the local one."""
    from .images import ImageError

    for batch in map_with_actors(paths, EncodeActor, {"spec": encoder.spec()}, batch_size=batch_size, actors=actors):
        failed = [(path, error) for path, error in zip(batch["path"], batch["error"]) if error]
        if failed:
            raise ImageError(f"{failed[0][0]}: {failed[0][1]}")
        yield list(batch["path"]), batch["features"]

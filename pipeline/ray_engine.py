"""caption.py --engine ray: the same records from a Ray Data pipeline (requirements-batch.txt).

  paths -> decode and resize (Ray tasks, as many as there are free CPUs)
        -> encode and beam-search a batch (an actor pool: each actor loads the model once)
        -> records, written by the driver to caption.py's output file as batches come back

The driver writes the file itself (not Dataset.write_json, which writes a folder of parts) so
that the output and its resuming are those of the local engine. Without $RAY_ADDRESS, ray.init()
starts a local Ray; with it, it joins that cluster. On a cluster the photos and a local model
folder must be on storage every node sees (a Hub model is fetched by each node); the pipeline
package travels with the job.
"""
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .batch import caption_pixels, caption_record, load_pixels
from .encoder import IMAGE_SIZE
from .hub import hub_snapshot
from .model_source import load_model

PACKAGE = Path(__file__).resolve().parent
# Settings the workers need as the driver has them (the Keras encoder's backbone file, say)
FORWARDED_ENV_PREFIX = "CAPTION_"
DECODE_CPUS = 0.5


def connect(**init_options) -> None:
    """Start or join Ray (ray.init reads $RAY_ADDRESS), shipping this package to the workers."""
    import ray
    if ray.is_initialized():
        return
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    ray.init(runtime_env={"py_modules": [str(PACKAGE)], "env_vars": env_vars}, **init_options)


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pixels for each path; a photo that cannot be loaded gets zeros and its error message."""
    loaded = [load_pixels(path) for path in batch["path"]]
    blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return {"path": batch["path"],
            "pixels": np.stack([blank if isinstance(item, str) else item for item in loaded]),
            "error": np.array([item if isinstance(item, str) else "" for item in loaded], dtype=object)}


class CaptionActor:
    """One copy of the model, loaded once; captions a decoded batch into records (JSON text)."""

    def __init__(self, model: str, revision: str | None, encoder: str, beam_size: int, n_best: int):
        self.captioner, _ = load_model(model, revision, encoder)
        self.beam_size, self.n_best = beam_size, n_best

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = [error or pixels for pixels, error in zip(batch["pixels"], batch["error"])]
        results = caption_pixels(self.captioner, loaded, self.beam_size, self.n_best)
        records = [caption_record(path, result, self.n_best) for path, result in zip(batch["path"], results)]
        return {"record": np.array([json.dumps(record) for record in records], dtype=object)}


def caption_with_ray(folder: Path, encoder: str, paths: list[str], write: Callable[[list[dict]], None], *,
                     batch_size: int = 32, beam_size: int = 3, n_best: int = 0, actors: int | None = None) -> None:
    """Caption `paths` on Ray with the model in `folder`, handing records to `write` as batches finish."""
    import ray

    connect()
    ray.data.DataContext.get_current().enable_progress_bars = False  # caption.py shows its own
    # A Hub snapshot is named by repo and commit, so every node fetches those very weights
    model, revision = hub_snapshot(folder) or (str(Path(folder).resolve()), None)
    actors = actors or len([node for node in ray.nodes() if node["Alive"]])
    dataset = (ray.data.from_items([{"path": path} for path in paths])
               # Half a CPU each, unlike the actors: Ray fuses operators whose resources match, and
               # decoding fused into the actors would run between encoder passes instead of beside them
               .map_batches(decode_batch, batch_size=batch_size, num_cpus=DECODE_CPUS)
               # num_cpus=1 reserves a CPU for scheduling; the encoder itself uses all of its node's
               # cores, which is why the default is one actor per node
               .map_batches(CaptionActor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=1,
                            fn_constructor_kwargs={"model": model, "revision": revision, "encoder": encoder,
                                                   "beam_size": beam_size, "n_best": n_best}))
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        write([json.loads(record) for record in batch["record"]])

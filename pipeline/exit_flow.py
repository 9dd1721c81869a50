"""Xception's exit flow trained together with the decoder (train.py --tune-exit-flow).

Measured on Flickr8k dev (docs/training.md, "Tuning Xception's exit flow"): a merge decoder
trained through the exit flow, the exit flow learning too at a tenth of the decoder's rate,
scored CIDEr-D 0.523 against 0.470 for the same run with it frozen (+0.053, 95% +0.028 to +0.079).

The activations entering the exit flow (19x19x728 a photo, float16: 526 KB) are computed once by
the rest of the backbone, which stays as it is, into one .npy file under the cache folder that a
killed pass resumes and training reads in place (3.7 GB for Flickr8k's train and dev photos: the
feature cache would hold them all in memory, as float32). Each batch holds `batch_images` photos
and all their captions, so a photo passes through the exit flow once an epoch, not once per caption.
"""
import hashlib
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from .encoder import EXIT_FLOW_FIRST, FEATURE_DIM, GRID_REGIONS, IMAGE_SIZE, PREPROCESSING, KerasEncoder, exit_flow
from .feature_cache import content_key
from .files import write_text_atomically
from .images import load_image, to_model_input
from .training import masked_loss

log = logging.getLogger(__name__)

INPUTS_FOLDER = "exit_flow_inputs"  # under the cache folder
ENCODE_BATCH = 64  # photos a pass of the exit flow takes when it only computes features


def inputs_key(backbone_fingerprint: str, paths: list[Path]) -> str:
    """What the exit flow's inputs of `paths` depend on: the backbone, and the images' contents, in order."""
    return hashlib.sha256(json.dumps({"weights": backbone_fingerprint, "image_size": IMAGE_SIZE,
                                      "preprocessing": PREPROCESSING, "images": [content_key(p) for p in paths]})
                          .encode()).hexdigest()[:16]


def exit_flow_inputs(encoder: KerasEncoder, paths: list[Path], cache_root: str | Path) -> np.ndarray:
    """The activations entering `encoder`'s exit flow for each image, (len(paths), 19, 19, 728)
    float16, read in place from a .npy file under `cache_root` keyed by the backbone and the
    images' contents in order (as the feature cache keys them). The file is written in batches,
    each committed by a count of the rows done beside it, so a killed pass goes on where it stopped."""
    key = inputs_key(encoder.fingerprint, paths)
    folder = Path(cache_root) / INPUTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path, done_file = folder / f"{key}.npy", folder / f"{key}.done.json"
    front = keras.Model(encoder.model.input, encoder.model.get_layer(EXIT_FLOW_FIRST).input)
    forward = tf.function(lambda pixels: front(keras.applications.xception.preprocess_input(
        tf.cast(pixels, tf.float32)), training=False))
    done = json.loads(done_file.read_text())["rows"] if done_file.exists() and path.exists() else 0
    shape = (len(paths), *front.output.shape[1:])
    array = (np.lib.format.open_memmap(path, mode="r+") if done else
             np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape))
    if array.shape != shape:
        raise ValueError(f"{path} holds {array.shape}, not {shape}: remove it")
    if done < len(paths):
        log.info("computing the exit flow's inputs of %d image(s) into %s (%d done)", len(paths) - done, path, done)
    with tqdm(total=len(paths), initial=done, desc="exit-flow inputs", unit="img") as bar:
        for start in range(done, len(paths), 32):
            batch = paths[start:start + 32]
            array[start:start + len(batch)] = forward(np.stack([to_model_input(load_image(p), IMAGE_SIZE)
                                                                for p in batch])).numpy()
            array.flush()
            write_text_atomically(done_file, json.dumps({"rows": start + len(batch)}))
            bar.update(len(batch))
    del array
    return np.load(path, mmap_mode="r")


class ExitFlowAndDecoder(keras.Model):
    """A backbone's exit flow and a decoder trained as one, each by its own Adam, the exit flow's
    batch-norm statistics kept from ImageNet (as fine-tuning with small batches usually keeps them).

    It holds what resuming needs, so pipeline.training.ResumableTraining commits it each epoch as
    it does a decoder: both networks' weights and both optimizers' states (rates included), in
    one file. `pooling`: the decoder's input, the map's mean ("avg") or its regions ("grid").
    """

    def __init__(self, backbone, decoder, pooling: str, learning_rate: float, exit_flow_learning_rate: float):
        super().__init__(name="exit_flow_and_decoder")
        self.exit_flow, self.decoder, self.pooling = exit_flow(backbone), decoder, pooling
        for layer in self.exit_flow.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        self.decoder_optimizer = keras.optimizers.Adam(learning_rate)
        self.exit_flow_optimizer = keras.optimizers.Adam(exit_flow_learning_rate)
        self.decoder_optimizer.build(decoder.trainable_variables)
        self.exit_flow_optimizer.build(self.exit_flow.trainable_variables)
        self.built = True  # its parts are built: nothing to call it on first
        self._train_step = tf.function(self._step, reduce_retracing=True)
        self._features = tf.function(lambda inputs: self.features(inputs, training=False), reduce_retracing=True)

    def features(self, inputs, training: bool):
        """The decoder's input from exit-flow inputs."""
        regions = self.exit_flow(tf.cast(inputs, tf.float32), training=training)
        if self.pooling == "avg":
            return tf.reduce_mean(regions, axis=[1, 2])
        return tf.reshape(regions, (-1, GRID_REGIONS, FEATURE_DIM))

    def _step(self, inputs, rows, words, targets):
        with tf.GradientTape() as tape:
            features = tf.gather(self.features(inputs, training=True), rows)
            loss = masked_loss(targets, self.decoder({"features": features, "words": words}, training=True))
        decoder_variables, exit_flow_variables = self.decoder.trainable_variables, self.exit_flow.trainable_variables
        gradients = tape.gradient(loss, decoder_variables + exit_flow_variables)
        self.decoder_optimizer.apply_gradients(zip(gradients[:len(decoder_variables)], decoder_variables))
        self.exit_flow_optimizer.apply_gradients(zip(gradients[len(decoder_variables):], exit_flow_variables))
        return loss

    def train_batch(self, inputs: np.ndarray, rows: np.ndarray, sequences: np.ndarray, pad_id: int) -> float:
        """One update on photos' exit-flow inputs and captions: caption i belongs to photo rows[i]."""
        length = int((sequences != pad_id).sum(axis=1).max())
        return float(self._train_step(inputs, rows.astype(np.int32), sequences[:, :length - 1],
                                      sequences[:, 1:length]))

    def encode(self, inputs: np.ndarray) -> np.ndarray:
        """The decoder's input for each row of exit-flow inputs (a memmap is read a batch at a time)."""
        return np.concatenate([self._features(np.asarray(inputs[i:i + ENCODE_BATCH])).numpy()
                               for i in range(0, len(inputs), ENCODE_BATCH)])

    def halve_learning_rates(self) -> None:
        for optimizer in (self.decoder_optimizer, self.exit_flow_optimizer):
            optimizer.learning_rate.assign(optimizer.learning_rate * 0.5)

    def learning_rates(self) -> dict[str, float]:
        return {"lr": float(self.decoder_optimizer.learning_rate),
                "exit_flow_lr": float(self.exit_flow_optimizer.learning_rate)}


def photo_batches(captions_of: list[np.ndarray], batch_images: int, seed: int):
    """(photo indices, each caption's row among them, caption indices) for one epoch: `batch_images`
    photos a batch in a shuffled order fixed by `seed`, with all their captions. The photos are
    sorted within a batch, so the inputs' memmap is read forward."""
    order = np.random.default_rng(seed).permutation(len(captions_of))
    for start in range(0, len(order), batch_images):
        photos = np.sort(order[start:start + batch_images])
        captions = [captions_of[p] for p in photos]
        yield photos, np.repeat(np.arange(len(photos)), [len(c) for c in captions]), np.concatenate(captions)


def mean_loss(decoder, dataset) -> float:
    """The decoder's cross-entropy per real word over a tf.data dataset of (inputs, targets) batches."""
    total, words = 0.0, 0
    for inputs, targets in dataset:
        count = int(tf.reduce_sum(tf.cast(targets != 0, tf.int32)))
        total += float(masked_loss(targets, decoder(inputs, training=False))) * count
        words += count
    return total / max(words, 1)


def fit(joint: ExitFlowAndDecoder, train_inputs: np.ndarray, captions_of: list[np.ndarray], sequences: np.ndarray,
        pad_id: int, score_dev, checkpoint, epochs: int, batch_images: int, halve_after: int, seed: int) -> None:
    """Train `joint` epoch by epoch from where `checkpoint` (a pipeline.training.ResumableTraining,
    restored) left off, until `epochs` or its early stopping. Both rates are halved at the start
    of each epoch from `halve_after` on (the schedule the experiment measured). `score_dev(joint)`:
    the epoch's dev logs (its loss and CIDEr-D) from the joint model's current weights."""
    checkpoint.set_model(joint)
    for epoch in range(len(checkpoint.history), epochs):
        if checkpoint.out_of_patience():
            break
        if epoch >= halve_after:
            joint.halve_learning_rates()
        started, losses = time.perf_counter(), []
        batches = photo_batches(captions_of, batch_images, seed + epoch)
        with tqdm(batches, total=-(-len(captions_of) // batch_images), desc=f"epoch {epoch + 1}/{epochs}",
                  unit="batch") as bar:
            for photos, rows, captions in bar:
                losses.append(joint.train_batch(np.asarray(train_inputs[photos]), rows, sequences[captions], pad_id))
                if len(losses) % 25 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        logs = {"loss": float(np.mean(losses)), **joint.learning_rates(), **score_dev(joint)}
        logs["seconds"] = round(time.perf_counter() - started, 1)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        checkpoint.on_epoch_end(epoch, logs)

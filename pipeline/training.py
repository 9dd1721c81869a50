"""Sequence-level teacher forcing: one example per caption, the whole caption at once; resumable training."""
import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from pycocoevalcap.cider.cider import Cider

from .beam_search import DEFAULT_BEAM_SIZE
from .captioner import decode
from .decoder import decoder_steps, layer_weights
from .files import atomic_path, write_text_atomically
from .metrics import python_tokenize
from .vocab import Vocabulary, clean_caption


DEV_CIDER = "val_cider"  # the epoch log's dev CIDEr-D (beam search): what each stage keeps its best epoch by


def caption_sequences(dataset, names, vocab: Vocabulary, max_words: int, remove_stop_words: bool = False):
    """(image index into `names`, padded id sequence <start> words <end>) for every caption."""
    image_index, sequences = [], []
    for i, name in enumerate(names):
        for caption in dataset.captions[name]:
            words = clean_caption(caption, remove_stop_words)[:max_words]
            if words:
                image_index.append(i)
                sequences.append(vocab.encode(words))
    padded = np.full((len(sequences), max_words + 2), vocab.pad_id, np.int32)
    for row, ids in zip(padded, sequences):
        row[:len(ids)] = ids
    return np.array(image_index, np.int32), padded


def make_dataset(features: np.ndarray, image_index: np.ndarray, sequences: np.ndarray, batch_size: int,
                 shuffle: bool, seed: int = 0) -> tf.data.Dataset:
    """Batches of ({features, words}, next words), grouped by caption length and cut to it.

    Most captions are far shorter than the longest, so batching similar lengths together saves
    most of the work an LSTM and a vocabulary-wide softmax would spend on padding.
    """
    features = tf.constant(features)  # as given: a grid stays float16 (Flickr8k's training split: 2.5 GB, not 5)
    ds = tf.data.Dataset.from_tensor_slices((image_index, sequences))
    if shuffle:
        ds = ds.shuffle(len(sequences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.bucket_by_sequence_length(
        lambda index, sequence: tf.reduce_sum(tf.cast(sequence != 0, tf.int32)),
        bucket_boundaries=[10, 13, 16, 20], bucket_batch_sizes=[batch_size] * 5)

    def to_example(index, sequence):
        length = tf.reduce_max(tf.reduce_sum(tf.cast(sequence != 0, tf.int32), axis=1))
        sequence = sequence[:, :length]
        return {"features": tf.cast(tf.gather(features, index), tf.float32), "words": sequence[:, :-1]}, sequence[:, 1:]

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def masked_loss(targets, logits):
    """Cross-entropy per real word: padding neither counts nor dilutes the mean."""
    mask = ops.cast(ops.not_equal(targets, 0), logits.dtype)
    losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return ops.sum(losses * mask) / ops.maximum(ops.sum(mask), 1.0)


def masked_accuracy(targets, logits):
    mask = ops.cast(ops.not_equal(targets, 0), "float32")
    hits = ops.cast(ops.equal(ops.cast(targets, "int32"), ops.cast(ops.argmax(logits, -1), "int32")), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


class DevScorer:
    """The best beam-search caption of each dev image by a decoder's current weights, and their CIDEr-D."""

    def __init__(self, references: list[list[str]], vocab: Vocabulary, config: dict,
                 beam_size: int = DEFAULT_BEAM_SIZE):
        self.vocab, self.config, self.beam_size = vocab, config, beam_size
        self.references = python_tokenize(dict(enumerate(references)))  # once, not every epoch
        self.cider = Cider()

    def __call__(self, model, features: np.ndarray) -> tuple[list[str], float]:
        steps = decoder_steps(layer_weights(model), self.config)
        captions = [best[0].text for best in decode(steps, self.vocab, features, self.beam_size,
                                                    self.config["max_length"])]
        predictions = python_tokenize({i: [caption] for i, caption in enumerate(captions)})
        return captions, float(self.cider.compute_score(self.references, predictions)[0])


class DevCider(keras.callbacks.Callback):
    """Scores beam-search captions of the dev images after each epoch (logged as DEV_CIDER).

    The dev loss stops improving before the captions do, so the kept model is chosen by this.
    """

    def __init__(self, features: np.ndarray, references: list[list[str]], vocab: Vocabulary, config: dict,
                 beam_size: int = DEFAULT_BEAM_SIZE):
        super().__init__()
        self.features, self.score = features, DevScorer(references, vocab, config, beam_size)

    def on_epoch_end(self, epoch, logs=None):
        logs[DEV_CIDER] = self.score(self.model, self.features)[1]


class ResumableTraining(keras.callbacks.Callback):
    """All a killed run needs to go on, committed atomically once per epoch; also early stopping.

    Keras' BackupAndRestore, ModelCheckpoint, CSVLogger and EarlyStopping each keep their own state
    and write it at their own moment, in place: a kill mid-write left a truncated checkpoint that
    blocked resuming, a kill between two of them lost the epoch's log row, and EarlyStopping's
    count of epochs without improvement started again at 0. Here each epoch's weights (with the
    optimizer's state) go to a new file, then `state.json`, replaced atomically, commits the epoch:
    it names the latest and best weights and holds the log rows, from which the CSV log and the
    early-stopping count follow. Must come after the callbacks that add to the epoch's logs.
    """

    STATE = "state.json"

    def __init__(self, folder: str | Path, log_file: str | Path, monitor: str, patience: int):
        super().__init__()
        self.folder, self.log_file, self.monitor, self.patience = Path(folder), Path(log_file), monitor, patience
        self.history: list[dict] = []
        self.best_weights: str | None = None

    def clear(self) -> None:
        """Forget any interrupted run (--fresh)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def restore(self, model: keras.Model) -> int:
        """Load the last committed epoch into `model` (weights and optimizer); the epoch to start at."""
        state_file = self.folder / self.STATE
        if not state_file.is_file():
            return 0
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if getattr(model, "optimizer", None) is not None:  # a compiled model's; others build their own
            model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
        model.load_weights(self.folder / state["latest"])
        self.history, self.best_weights = state["history"], state["best"]
        self.write_log()  # a kill may have come between the commit and the log
        return len(self.history)

    def epochs_since_best(self) -> int:
        scores = [row[self.monitor] for row in self.history]
        return len(scores) - 1 - scores.index(max(scores)) if scores else 0

    def out_of_patience(self) -> bool:
        return bool(self.history) and self.epochs_since_best() >= self.patience

    def load_best(self, model: keras.Model) -> None:
        model.load_weights(self.folder / self.best_weights)

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.history.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        latest = f"epoch-{epoch}.weights.h5"
        with atomic_path(self.folder / latest) as tmp:
            self.model.save_weights(tmp)
        if self.epochs_since_best() == 0:
            self.best_weights = latest
        state = {"latest": latest, "best": self.best_weights, "history": self.history}
        write_text_atomically(self.folder / self.STATE, json.dumps(state, indent=1))
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name not in (latest, self.best_weights):
                old.unlink()
        self.write_log()
        if self.out_of_patience():
            self.model.stop_training = True

    def write_log(self) -> None:
        """training_log.csv from the committed rows: epoch first, then the logs' keys, as CSVLogger wrote it."""
        keys = sorted({key for row in self.history for key in row} - {"epoch"})
        with atomic_path(self.log_file) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["epoch", *keys])
            writer.writeheader()
            writer.writerows(self.history)


"""Sequence-level teacher forcing: one example per caption, the whole caption at once."""
import keras
import numpy as np
import tensorflow as tf
from keras import ops
from pycocoevalcap.cider.cider import Cider

from .captioner import decode
from .decoder import DecoderSteps
from .metrics import python_tokenize
from .vocab import Vocabulary, clean_caption


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
    features = tf.constant(features, tf.float32)
    ds = tf.data.Dataset.from_tensor_slices((image_index, sequences))
    if shuffle:
        ds = ds.shuffle(len(sequences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.bucket_by_sequence_length(
        lambda index, sequence: tf.reduce_sum(tf.cast(sequence != 0, tf.int32)),
        bucket_boundaries=[10, 13, 16, 20], bucket_batch_sizes=[batch_size] * 5)

    def to_example(index, sequence):
        length = tf.reduce_max(tf.reduce_sum(tf.cast(sequence != 0, tf.int32), axis=1))
        sequence = sequence[:, :length]
        return {"features": tf.gather(features, index), "words": sequence[:, :-1]}, sequence[:, 1:]

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


class DevCider(keras.callbacks.Callback):
    """Scores beam-search captions of the dev images after each epoch (logged as `val_cider`).

    The dev loss stops improving before the captions do, so the kept model is chosen by this.
    """

    def __init__(self, features: np.ndarray, references: list[list[str]], vocab: Vocabulary, max_length: int,
                 beam_size: int = 3):
        super().__init__()
        self.features, self.vocab, self.max_length, self.beam_size = features, vocab, max_length, beam_size
        self.references = python_tokenize(dict(enumerate(references)))  # once, not every epoch
        self.cider = Cider()

    def on_epoch_end(self, epoch, logs=None):
        captions = decode(DecoderSteps(self.model), self.vocab, self.features, self.beam_size, self.max_length)
        predictions = python_tokenize({i: [best[0].text] for i, best in enumerate(captions)})
        logs["val_cider"] = float(self.cider.compute_score(self.references, predictions)[0])

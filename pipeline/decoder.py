"""The merge decoder: image features and an LSTM over the words meet in an add, then a softmax.

Training runs the whole caption at once (teacher forcing). Inference splits the same layers into
an image step (features -> image projection, run once) and a word step that carries the LSTM
state, so each new word costs one LSTM cell and one output layer, not a pass over the prefix.
"""
import keras
import numpy as np
import tensorflow as tf

from .encoder import FEATURE_DIM

ARCHITECTURE = {"name": "merge-lstm", "units": 256, "embedding_dim": 256, "dropout": 0.5}


def build_decoder(vocab_size: int, units: int = 256, embedding_dim: int = 256, dropout: float = 0.5,
                  feature_dim: int = FEATURE_DIM) -> keras.Model:
    features = keras.Input((feature_dim,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    image = keras.layers.Dropout(dropout, name="image_dropout")(features)
    image = keras.layers.Dense(units, activation="relu", name="image_projection")(image)
    text = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(words)
    text = keras.layers.Dropout(dropout, name="text_dropout")(text)
    text = keras.layers.LSTM(units, return_sequences=True, name="lstm")(text)
    image = keras.layers.Reshape((1, units), name="image_per_step")(image)  # broadcast over time
    merged = keras.layers.Add(name="merge")([image, text])
    merged = keras.layers.Dense(units, activation="relu", name="merge_projection")(merged)
    # logits: the softmax is applied inside the loss (stable) and by decoding (log-softmax)
    logits = keras.layers.Dense(vocab_size, name="word_logits")(merged)
    return keras.Model([features, words], logits, name="merge_decoder")


class DecoderSteps:
    """The trained decoder's layers as two compiled functions for decoding."""

    def __init__(self, model: keras.Model):
        image_projection = model.get_layer("image_projection")
        embedding = model.get_layer("embedding")
        cell = model.get_layer("lstm").cell
        merge_projection = model.get_layer("merge_projection")
        word_logits = model.get_layer("word_logits")
        self.units = cell.units
        feature_dim = image_projection.kernel.shape[0]

        @tf.function(input_signature=[tf.TensorSpec([None, feature_dim], tf.float32)])
        def image_step(features):
            return image_projection(features)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)] + [tf.TensorSpec([None, self.units])] * 3)
        def word_step(tokens, image, h, c):
            # a plain lookup: calling the layer would attach a padding mask the cell cannot use
            out, (h, c) = cell(tf.gather(embedding.embeddings, tokens), [h, c], training=False)
            logits = word_logits(merge_projection(image + out))
            return tf.nn.log_softmax(logits), h, c

        # concrete functions: a call skips tf.function's argument binding, which costs more than the
        # word step itself at batch 1
        self._image_step, self._word_step = image_step.get_concrete_function(), word_step.get_concrete_function()

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        image = self._image_step(np.asarray(features, np.float32)).numpy()
        zeros = np.zeros_like(image)
        return image, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """Log-probabilities of the next word for each row, and the new state."""
        image, h, c = state
        log_probs, h, c = self._word_step(np.asarray(tokens, np.int32), image, h, c)
        return log_probs.numpy(), (image, h.numpy(), c.numpy())

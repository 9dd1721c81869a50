"""The merge decoder: image features and an LSTM over the words meet in an add, then a softmax.

Training runs the whole caption at once (teacher forcing). Inference splits the same layers into
an image step (features -> image projection, run once) and a word step that carries the LSTM
state, so each new word costs one LSTM cell and one output layer, not a pass over the prefix.
Both run in NumPy on the trained weights: at this size TensorFlow's per-call overhead dominates.
"""
import keras
import numpy as np

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
    """The trained decoder's layers as an image step and a word step, computed with NumPy.

    A word step is a few small matrix products: NumPy does one in about 0.2 ms, while a call into
    TensorFlow costs 0.5-1 ms in dispatch alone (even compiled), most of a caption's time.
    """

    def __init__(self, model: keras.Model):
        cell = model.get_layer("lstm").cell
        if (cell.activation, cell.recurrent_activation) != (keras.activations.tanh, keras.activations.sigmoid):
            raise ValueError("DecoderSteps computes an LSTM with tanh and sigmoid activations")
        self.units = cell.units
        self._image_kernel, self._image_bias = self._weights(model, "image_projection")
        embeddings = model.get_layer("embedding").embeddings.numpy()
        kernel, self._recurrent_kernel, bias = (w.numpy() for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
        self._word_gates = embeddings @ kernel + bias  # each word's input to the LSTM gates, computed once
        self._merge_kernel, self._merge_bias = self._weights(model, "merge_projection")
        self._logits_kernel, self._logits_bias = self._weights(model, "word_logits")

    @staticmethod
    def _weights(model, name):
        return [w.numpy() for w in model.get_layer(name).weights]

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        image = np.maximum(np.asarray(features, np.float32) @ self._image_kernel + self._image_bias, 0)
        zeros = np.zeros_like(image)
        return image, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """Log-probabilities of the next word for each row, and the new state."""
        image, h, c = state
        # Keras' LSTM cell: gates i, f, candidate, o; sigmoid(x) = (1 + tanh(x / 2)) / 2 never overflows
        i, f, g, o = np.split(self._word_gates[np.asarray(tokens)] + h @ self._recurrent_kernel, 4, axis=1)
        c = (1 + np.tanh(f / 2)) / 2 * c + (1 + np.tanh(i / 2)) / 2 * np.tanh(g)
        h = (1 + np.tanh(o / 2)) / 2 * np.tanh(c)
        merged = np.maximum((image + h) @ self._merge_kernel + self._merge_bias, 0)
        logits = merged @ self._logits_kernel + self._logits_bias
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)), (image, h, c)

"""The merge decoder: image features and an LSTM over the words meet in an add, then a softmax.

Training runs the whole caption at once (teacher forcing). Inference splits the same layers into
an image step (features -> image projection, run once) and a word step that carries the LSTM
state, so each new word costs one LSTM cell and one output layer, not a pass over the prefix.
Both run in NumPy on the trained weights: at this size TensorFlow's per-call overhead dominates,
and serving needs no TensorFlow at all (Keras is imported only to build the model for training).
"""
import numpy as np

from .encoder import FEATURE_DIM

ARCHITECTURE = {"name": "merge-lstm", "units": 256, "embedding_dim": 256, "dropout": 0.5}


def build_decoder(vocab_size: int, units: int = 256, embedding_dim: int = 256, dropout: float = 0.5,
                  feature_dim: int = FEATURE_DIM):
    import keras

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


def layer_weights(model) -> dict[str, list[np.ndarray]]:
    """A Keras decoder's weights by layer name, as read_keras_weights reads them from its file."""
    return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers if layer.weights}


class DecoderSteps:
    """The trained decoder's layers as an image step and a word step, computed with NumPy.

    A word step is a few small matrix products: NumPy does one in about 0.2 ms, while a call into
    TensorFlow costs 0.5-1 ms in dispatch alone (even compiled), most of a caption's time.
    `weights`: each layer's arrays by layer name (layer_weights, or read_keras_weights of the file);
    `config`: the model folder's config (make_config), whose sizes the weights must have.
    """

    def __init__(self, weights: dict[str, list[np.ndarray]], config: dict):
        vocab_size, feature_dim = config["vocab_size"], config["encoder"]["feature_dim"]
        units, embedding_dim = config["architecture"]["units"], config["architecture"]["embedding_dim"]
        expected = {"image_projection": [(feature_dim, units), (units,)],
                    "embedding": [(vocab_size, embedding_dim)],
                    "lstm": [(embedding_dim, 4 * units), (units, 4 * units), (4 * units,)],
                    "merge_projection": [(units, units), (units,)],
                    "word_logits": [(units, vocab_size), (vocab_size,)]}
        for name, shapes in expected.items():
            found = [tuple(w.shape) for w in weights.get(name, [])]
            if found != shapes:
                raise ValueError(f"layer {name!r}: weights of shapes {found or 'none'}, the architecture "
                                 f"needs {shapes}")
        self.units = units
        self._image_kernel, self._image_bias = weights["image_projection"]
        kernel, self._recurrent_kernel, bias = weights["lstm"]
        # each word's input to the LSTM gates, computed once
        self._word_gates = (weights["embedding"][0] @ kernel + bias).astype(np.float32)
        self._merge_kernel, self._merge_bias = weights["merge_projection"]
        self._logits_kernel, self._logits_bias = weights["word_logits"]

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

"""attention-lstm: a decoder that looks at Xception's grid of regions for each word.

Lu et al.'s spatial attention ("Knowing When to Look", 2017): an LSTM reads the words beside the
image's mean feature, then its state h_t weighs the 100 regions (a softmax over
w . tanh(W_v v_i + W_h h_t)), and the weighted regions meet h_t before the output layer. The
attention follows the LSTM rather than feeding it (Xu et al.'s order), so training runs Keras'
whole-sequence LSTM and attends to every word at once, and the weights a word was chosen with
are the map of where the model looked for it.

Its features are a grid (encoder pooling "grid": GRID_REGIONS x FEATURE_DIM per image).
"""
import numpy as np

from .numpy_layers import log_softmax, lstm_cell, rows_times, softmax

NAME = "attention-lstm"
ARCHITECTURE = {"name": NAME, "units": 256, "embedding_dim": 256, "attention_dim": 256, "dropout": 0.5}
ATTENTION_LAYER = "attention_weights"  # the Keras layer whose output the NumPy step's weights match


def attention_layers(regions, words, vocab_size: int, units: int, embedding_dim: int, attention_dim: int,
                     dropout: float, prefix: str = ""):
    """The decoder's layers on Keras inputs (regions: batch x regions x features); `prefix` names an
    ensemble member's layers apart. Returns the word logits."""
    import keras
    from keras import ops

    regions = keras.layers.Dropout(dropout, name=f"{prefix}region_dropout")(regions)
    projected = keras.layers.Dense(units, activation="relu", name=f"{prefix}region_projection")(regions)
    image = keras.layers.Dense(units, activation="relu", name=f"{prefix}image_projection")(ops.mean(regions, axis=1))
    # no mask: padding only follows a caption's end, so the words before it never see it, and the
    # loss leaves out what comes after
    text = keras.layers.Embedding(vocab_size, embedding_dim, name=f"{prefix}embedding")(words)
    text = keras.layers.Dropout(dropout, name=f"{prefix}text_dropout")(text)
    image_per_word = ops.expand_dims(image, 1) + ops.zeros_like(text[:, :, :1])  # batch x words x units
    h = keras.layers.LSTM(units, return_sequences=True, name=f"{prefix}lstm")(
        keras.layers.Concatenate(name=f"{prefix}lstm_input")([text, image_per_word]))
    keys = keras.layers.Dense(attention_dim, use_bias=False, name=f"{prefix}attention_regions")(projected)
    query = keras.layers.Dense(attention_dim, name=f"{prefix}attention_query")(h)
    scores = keras.layers.Dense(1, use_bias=False, name=f"{prefix}attention_score")(
        ops.tanh(ops.expand_dims(keys, 1) + ops.expand_dims(query, 2)))  # batch x words x regions x 1
    weights = keras.layers.Softmax(axis=-1, name=f"{prefix}{ATTENTION_LAYER}")(ops.squeeze(scores, -1))
    context = ops.einsum("bwr,bru->bwu", weights, projected)
    merged = keras.layers.Dense(units, activation="relu", name=f"{prefix}merge_projection")(context + h)
    merged = keras.layers.Dropout(dropout, name=f"{prefix}merge_dropout")(merged)
    return keras.layers.Dense(vocab_size, name=f"{prefix}word_logits")(merged)


def build(config: dict):
    import keras

    arch, encoder = config["architecture"], config["encoder"]
    regions = keras.Input((None, encoder["feature_dim"]), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    logits = attention_layers(regions, words, config["vocab_size"], arch["units"], arch["embedding_dim"],
                              arch["attention_dim"], arch["dropout"])
    return keras.Model([regions, words], logits, name="attention_decoder")


def expected_shapes(architecture: dict, vocab_size: int, feature_dim: int) -> dict[str, list[tuple[int, ...]]]:
    units, embedding, attention = architecture["units"], architecture["embedding_dim"], architecture["attention_dim"]
    return {"region_projection": [(feature_dim, units), (units,)],
            "image_projection": [(feature_dim, units), (units,)],
            "embedding": [(vocab_size, embedding)],
            "lstm": [(embedding + units, 4 * units), (units, 4 * units), (4 * units,)],
            "attention_regions": [(units, attention)],
            "attention_query": [(units, attention), (attention,)],
            "attention_score": [(attention, 1)],
            "merge_projection": [(units, units), (units,)],
            "word_logits": [(units, vocab_size), (vocab_size,)]}


class AttentionSteps:
    """The trained decoder as an image step and a word step in NumPy (decoder.DecoderSteps' way).

    The image step projects the regions and their attention keys once; a word step is one LSTM
    cell, the attention over the regions (beam 3: 3 x 100 x attention_dim values) and the output
    layer. `attended_step` also returns the attention weights each next word was chosen with.
    """

    def __init__(self, weights: dict[str, list[np.ndarray]], config: dict, architecture: dict | None = None,
                 prefix: str = ""):
        architecture = architecture or config["architecture"]
        weights = {name[len(prefix):]: arrays for name, arrays in weights.items() if name.startswith(prefix)}
        for name, shapes in expected_shapes(architecture, config["vocab_size"], config["encoder"]["feature_dim"]).items():
            found = [tuple(w.shape) for w in weights.get(name, [])]
            if found != shapes:
                raise ValueError(f"layer {name!r}: weights of shapes {found or 'none'}, the architecture "
                                 f"needs {shapes}")
        embedding_dim = architecture["embedding_dim"]
        self._region_kernel, self._region_bias = weights["region_projection"]
        self._image_kernel, self._image_bias = weights["image_projection"]
        kernel, self._recurrent_kernel, bias = weights["lstm"]
        self._word_gates = (weights["embedding"][0] @ kernel[:embedding_dim] + bias).astype(np.float32)
        self._image_gates_kernel = kernel[embedding_dim:]
        self._keys_kernel = weights["attention_regions"][0]
        self._query_kernel, self._query_bias = weights["attention_query"]
        self._score = weights["attention_score"][0][:, 0]
        self._merge_kernel, self._merge_bias = weights["merge_projection"]
        self._logits_kernel, self._logits_bias = weights["word_logits"]

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        regions = np.asarray(features, np.float32)
        if regions.ndim != 3:
            raise ValueError(f"{NAME} reads a grid of regions per image (encoder pooling 'grid'), "
                             f"got features of shape {regions.shape}")
        projected = np.maximum(regions @ self._region_kernel + self._region_bias, 0)
        image = np.maximum(regions.mean(axis=1) @ self._image_kernel + self._image_bias, 0)
        h = np.zeros((len(regions), self._recurrent_kernel.shape[0]), np.float32)
        return projected, projected @ self._keys_kernel, image @ self._image_gates_kernel, h, h.copy()

    def attended_step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """Log-probabilities of the next word for each row, the new state, and the attention weights
        over the regions that the word was chosen with (each row sums to 1)."""
        projected, keys, image_gates, h, c = state
        h, c = lstm_cell(self._word_gates[np.asarray(tokens)] + image_gates + rows_times(h, self._recurrent_kernel), c)
        query = h @ self._query_kernel + self._query_bias
        weights = softmax(np.tanh(keys + query[:, None, :]) @ self._score)
        context = np.einsum("nr,nru->nu", weights, projected)
        merged = np.maximum((context + h) @ self._merge_kernel + self._merge_bias, 0)
        log_probs = log_softmax(rows_times(merged, self._logits_kernel) + self._logits_bias)
        return log_probs, (projected, keys, image_gates, h, c), weights

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        log_probs, state, _ = self.attended_step(tokens, state)
        return log_probs, state


def values_in_memory(architecture: dict, config: dict) -> int:
    """The float32 values the decoder holds while captioning: its weights and the gate table."""
    shapes = expected_shapes(architecture, config["vocab_size"], config["encoder"]["feature_dim"])
    weights = sum(int(np.prod(shape)) for arrays in shapes.values() for shape in arrays)
    return weights + config["vocab_size"] * 4 * architecture["units"]


def check(architecture) -> None:
    """config.json's architecture (a pipeline.artifact.ConfigSection), each size checked."""
    architecture.get("units")
    architecture.get("embedding_dim")
    architecture.get("attention_dim")
    architecture.get("dropout", float)


def describe(architecture: dict) -> str:
    return (f"an LSTM decoder with spatial attention over the image's 10x10 regions ({architecture['units']} "
            f"units, {architecture['embedding_dim']}-wide word embeddings)")

"""The decoders a model folder may hold, by the name its config.json gives (DECODERS).

merge-lstm: image features and an LSTM over the words meet in an add, then a softmax.
attention-lstm: the LSTM's state weighs Xception's grid of regions for each word (pipeline/attention.py).
ensemble: several members whose next-word distributions are averaged (ENSEMBLE_MEANS).

Training runs the whole caption at once (teacher forcing). Inference splits the same layers into
an image step (features -> image projection, run once) and a word step that carries the LSTM
state, so each new word costs one LSTM cell and one output layer, not a pass over the prefix.
Both run in NumPy on the trained weights: at this size TensorFlow's per-call overhead dominates,
and serving needs no TensorFlow at all (Keras is imported only to build the model for training).
"""
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import attention
from .encoder import FEATURE_DIM, pooled
from .numpy_layers import log_softmax, lstm_cell, rows_times

ARCHITECTURE = {"name": "merge-lstm", "units": 256, "embedding_dim": 256, "dropout": 0.5}
# How an ensemble averages its members' next-word distributions (config.json's architecture.mean):
#   geometric: the normalised mean of their log-probabilities (a word must suit every member).
#     Flickr8k dev CIDEr-D at beam 3, against arithmetic: 0.535 vs 0.524 with 2 self-critical
#     members, 0.540 vs 0.536 with 3, 0.541 vs 0.534 with 4.
#   arithmetic: the mean of their probabilities.
ENSEMBLE_MEANS = ("geometric", "arithmetic")
FORMER_ENSEMBLE_MEAN = "arithmetic"  # what an ensemble folder that names no mean was made with


def ensemble_mean(architecture: dict) -> str:
    """The mean an ensemble's config.json architecture names, or the former one where it names none."""
    return architecture.get("mean", FORMER_ENSEMBLE_MEAN)


def build_decoder(vocab_size: int, units: int = 256, embedding_dim: int = 256, dropout: float = 0.5,
                  feature_dim: int = FEATURE_DIM):
    import keras

    features = keras.Input((feature_dim,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    logits = merge_layers(features, words, vocab_size, units, embedding_dim, dropout)
    return keras.Model([features, words], logits, name="merge_decoder")


def merge_layers(features, words, vocab_size: int, units: int, embedding_dim: int, dropout: float, prefix: str = ""):
    """The merge decoder's layers on Keras inputs; `prefix` names an ensemble member's layers apart."""
    import keras

    image = keras.layers.Dropout(dropout, name=f"{prefix}image_dropout")(features)
    image = keras.layers.Dense(units, activation="relu", name=f"{prefix}image_projection")(image)
    text = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name=f"{prefix}embedding")(words)
    text = keras.layers.Dropout(dropout, name=f"{prefix}text_dropout")(text)
    text = keras.layers.LSTM(units, return_sequences=True, name=f"{prefix}lstm")(text)
    image = keras.layers.Reshape((1, units), name=f"{prefix}image_per_step")(image)  # broadcast over time
    merged = keras.layers.Add(name=f"{prefix}merge")([image, text])
    merged = keras.layers.Dense(units, activation="relu", name=f"{prefix}merge_projection")(merged)
    # logits: the softmax is applied inside the loss (stable) and by decoding (log-softmax)
    return keras.layers.Dense(vocab_size, name=f"{prefix}word_logits")(merged)


def member_prefix(index: int) -> str:
    return f"member{index}_"


def member_logits(features, words, vocab_size: int, member: dict, prefix: str):
    """One ensemble member's word logits on the ensemble's inputs: a merge member reads a grid as
    its mean (Xception's average pooling), an attention member the grid itself."""
    import keras

    if member["name"] == attention.NAME:
        return attention.attention_layers(features, words, vocab_size, member["units"], member["embedding_dim"],
                                          member["attention_dim"], member["dropout"], prefix)
    if len(features.shape) == 3:
        features = keras.ops.mean(features, axis=1)
    return merge_layers(features, words, vocab_size, member["units"], member["embedding_dim"], member["dropout"],
                        prefix)


def build_ensemble(vocab_size: int, members: list[dict], feature_dim: int = FEATURE_DIM,
                   mean: str = FORMER_ENSEMBLE_MEAN):
    """Members side by side on the same inputs; the output is the log of their averaged distribution
    (ENSEMBLE_MEANS), which a softmax (the losses', beam search's) turns back into that average.
    With an attention member the input is the grid, which the merge members read pooled."""
    import keras

    grid = any(m["name"] == attention.NAME for m in members)
    features = keras.Input((None, feature_dim) if grid else (feature_dim,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    log_probs = keras.ops.stack([
        keras.ops.log_softmax(member_logits(features, words, vocab_size, m, member_prefix(i)), axis=-1)
        for i, m in enumerate(members)])
    if mean == "geometric":
        average = keras.ops.log_softmax(keras.ops.mean(log_probs, axis=0), axis=-1)
    else:  # the logarithm as a Python float keeps the output float32 (np.log's would make it float64)
        average = keras.ops.logsumexp(log_probs, axis=0) - float(np.log(len(members)))
    return keras.Model([features, words], average, name="ensemble_decoder")


def layer_weights(model) -> dict[str, list[np.ndarray]]:
    """A Keras decoder's weights by layer name, as read_keras_weights reads them from its file."""
    return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers if layer.weights}


class DecoderSteps:
    """The trained decoder's layers as an image step and a word step, computed with NumPy.

    A word step is a few small matrix products: NumPy does one in about 0.2 ms, while a call into
    TensorFlow costs 0.5-1 ms in dispatch alone (even compiled), most of a caption's time.
    `weights`: each layer's arrays by layer name (layer_weights, or read_keras_weights of the file);
    `config`: the model folder's config (make_config), whose sizes the weights must have;
    `architecture` and `prefix`: an ensemble member's settings and layer-name prefix.
    """

    def __init__(self, weights: dict[str, list[np.ndarray]], config: dict, architecture: dict | None = None,
                 prefix: str = ""):
        vocab_size, feature_dim = config["vocab_size"], config["encoder"]["feature_dim"]
        architecture = architecture or config["architecture"]
        units, embedding_dim = architecture["units"], architecture["embedding_dim"]
        weights = {name[len(prefix):]: arrays for name, arrays in weights.items() if name.startswith(prefix)}
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
        """From pooled features, or a grid's (pooled: its mean), as an ensemble with attention members reads."""
        image = np.maximum(np.asarray(pooled(features), np.float32) @ self._image_kernel + self._image_bias, 0)
        zeros = np.zeros_like(image)
        return image, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """Log-probabilities of the next word for each row, and the new state."""
        image, h, c = state
        h, c = lstm_cell(self._word_gates[np.asarray(tokens)] + rows_times(h, self._recurrent_kernel), c)
        merged = np.maximum((image + h) @ self._merge_kernel + self._merge_bias, 0)
        return log_softmax(rows_times(merged, self._logits_kernel) + self._logits_bias), (image, h, c)


class EnsembleSteps:
    """Several members' steps as one, whose next-word distribution is the average of theirs
    (`mean`, one of ENSEMBLE_MEANS); the average is itself a distribution, so beam search needs
    no change. With attention members, `attended_step` gives the mean of their weights."""

    def __init__(self, members: list, mean: str = FORMER_ENSEMBLE_MEAN):
        self.members, self.mean = members, mean
        self._attending = [hasattr(member, "attended_step") for member in members]
        if any(self._attending):
            self.attended_step = self._attended_step

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        states = [member.initial_state(features) for member in self.members]
        self._sizes = [len(state) for state in states]
        return tuple(array for state in states for array in state)

    def _members_step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        log_probs, new_state, weights, start = [], [], [], 0
        for member, size, attending in zip(self.members, self._sizes, self._attending):
            member_state = state[start:start + size]
            if attending:
                member_log_probs, member_state, member_weights = member.attended_step(tokens, member_state)
                weights.append(member_weights)
            else:
                member_log_probs, member_state = member.step(tokens, member_state)
            log_probs.append(member_log_probs)
            new_state.extend(member_state)
            start += size
        stacked = np.stack(log_probs)
        if self.mean == "geometric":
            average = log_softmax(stacked.mean(axis=0))
        else:
            top = stacked.max(axis=0)
            average = top + np.log(np.exp(stacked - top).mean(axis=0))
        return average, tuple(new_state), weights

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        average, state, _ = self._members_step(tokens, state)
        return average, state

    def _attended_step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        average, state, weights = self._members_step(tokens, state)
        return average, state, np.mean(weights, axis=0)


Steps = DecoderSteps | attention.AttentionSteps | EnsembleSteps  # what beam search and sampling drive: initial_state and step


def merge_lstm_steps(weights: dict, config: dict) -> DecoderSteps:
    return DecoderSteps(weights, config)


MEMBER_STEPS = {"merge-lstm": DecoderSteps, attention.NAME: attention.AttentionSteps}  # what an ensemble may hold


def ensemble_steps(weights: dict, config: dict) -> EnsembleSteps:
    return EnsembleSteps([MEMBER_STEPS[member["name"]](weights, config, member, member_prefix(i))
                          for i, member in enumerate(config["architecture"]["members"])],
                         ensemble_mean(config["architecture"]))


def build_merge_lstm(config: dict):
    arch = config["architecture"]
    return build_decoder(config["vocab_size"], arch["units"], arch["embedding_dim"], arch["dropout"],
                         config["encoder"]["feature_dim"])


def build_ensemble_from(config: dict):
    return build_ensemble(config["vocab_size"], config["architecture"]["members"], config["encoder"]["feature_dim"],
                          ensemble_mean(config["architecture"]))


def merge_lstm_values(architecture: dict, config: dict) -> int:
    """The float32 values a merge decoder holds while it captions: its weights, and the word
    step's gate table (decoder.DecoderSteps: vocabulary x 4 x units)."""
    vocab_size, feature_dim = config["vocab_size"], config["encoder"]["feature_dim"]
    units, embedding_dim = architecture["units"], architecture["embedding_dim"]
    weights = ((feature_dim + 1) * units + vocab_size * embedding_dim + (embedding_dim + units + 1) * 4 * units
               + (units + 1) * units + (units + 1) * vocab_size)
    return weights + vocab_size * 4 * units


def check_merge_lstm(architecture) -> None:
    """config.json's architecture of one merge decoder (or an ensemble member), each size checked:
    `architecture` is a section of the config (pipeline.artifact.ConfigSection)."""
    architecture.get("units")
    architecture.get("embedding_dim")
    architecture.get("dropout", float)


def check_ensemble(architecture) -> None:
    members = architecture.items("members")
    if not members or not all(member.value.get("name") in MEMBER_STEPS for member in members):
        raise architecture.error(f"members must list {' or '.join(MEMBER_STEPS)} decoders")
    for member in members:
        DECODERS[member.value["name"]].check(member)
    if ensemble_mean(architecture.value) not in ENSEMBLE_MEANS:
        raise architecture.error(f"mean {architecture.value['mean']!r} is not one of {', '.join(ENSEMBLE_MEANS)}")


def ensemble_values(config: dict) -> int:
    return sum(DECODERS[m["name"]].values_in_memory({**config, "architecture": m})
               for m in config["architecture"]["members"])


def ensemble_pooling(architecture: dict) -> str:
    """The grid when any member attends to it (the merge members read its mean), else the pooled vector."""
    return "grid" if any(decoder_pooling(m) == "grid" for m in architecture["members"]) else "avg"


def describe_merge_lstm(architecture: dict) -> str:
    return (f"a \"merge\" LSTM decoder ({architecture['units']} units, {architecture['embedding_dim']}-wide "
            "word embeddings)")


def describe_ensemble(architecture: dict) -> str:
    members = architecture["members"]
    attending = sum(m["name"] == attention.NAME for m in members)
    kinds = (f"{len(members) - attending} \"merge\" and {attending} attention LSTM decoders" if attending
             else f"{len(members)} \"merge\" LSTM decoders")
    return f"an ensemble of {kinds}, whose next-word distributions are averaged ({ensemble_mean(architecture)} mean)"


@dataclass(frozen=True)
class Decoder:
    """What the code knows of one architecture, by config.json's architecture.name:
      build: its Keras model (training), from the config;
      steps: its NumPy steps (captioning) on the same weights, from the weights and the config;
      check: checks config.json's architecture section before anything is built (ConfigSection);
      values_in_memory: the float32 values it holds while captioning (the model folder's budget,
        checked before its files are read);
      describe: one phrase for the model card, from the architecture;
      pooling: the encoder output it reads (encoder.POOLINGS), from the architecture;
      trained_from: the architecture train.py --architecture starts from, or None for one made of
        trained decoders (ensemble.py)."""
    build: Callable[[dict], object]
    steps: Callable[[dict, dict], object]
    check: Callable[[object], None]
    values_in_memory: Callable[[dict], int]
    describe: Callable[[dict], str]
    pooling: Callable[[dict], str] = lambda architecture: "avg"
    trained_from: dict | None = None


# The decoders a model folder may hold, by config.json's architecture.name. Adding one: its module
# (layers, NumPy steps, checks) and one line here.
DECODERS = {
    "merge-lstm": Decoder(build_merge_lstm, merge_lstm_steps, check_merge_lstm,
                          lambda config: merge_lstm_values(config["architecture"], config), describe_merge_lstm,
                          trained_from=ARCHITECTURE),
    attention.NAME: Decoder(attention.build, attention.AttentionSteps, attention.check,
                            lambda config: attention.values_in_memory(config["architecture"], config),
                            attention.describe, pooling=lambda architecture: "grid",
                            trained_from=attention.ARCHITECTURE),
    "ensemble": Decoder(build_ensemble_from, ensemble_steps, check_ensemble, ensemble_values, describe_ensemble,
                        pooling=ensemble_pooling),
}
TRAINABLE = tuple(name for name, decoder in DECODERS.items() if decoder.trained_from is not None)


def decoder_steps(weights: dict, config: dict):
    """The NumPy steps of the decoder that config.json names, on its weights (layer_weights or the file's)."""
    return DECODERS[config["architecture"]["name"]].steps(weights, config)


def decoder_pooling(architecture: dict) -> str:
    """The encoder output (encoder.POOLINGS) that the decoder config.json names reads."""
    return DECODERS[architecture["name"]].pooling(architecture)


def build_keras(config: dict):
    """The Keras model of the decoder that config.json names."""
    return DECODERS[config["architecture"]["name"]].build(config)

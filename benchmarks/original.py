"""The original approach with our trained model: its inference loop, its training model and generator."""
from .timing import p50_ms, summary, timed


class OriginalCaptioner:
    """The seed project's inference with our trained model: Keras `predict` for Xception, then one
    `predict` per word on the whole pre-padded prefix, each word found by scanning the vocabulary."""

    def __init__(self, xception, decoder, vocab, max_length: int):
        self.xception, self.decoder, self.max_length = xception, decoder, max_length
        self.word_index = dict(vocab.index)  # what the seed's Keras Tokenizer held
        self.start, self.end = vocab.tokens[vocab.start_id], vocab.tokens[vocab.end_id]

    def encode(self, path):
        import keras
        from pipeline.encoder import IMAGE_SIZE
        image = keras.utils.load_img(path, target_size=(IMAGE_SIZE, IMAGE_SIZE))
        pixels = keras.applications.xception.preprocess_input(keras.utils.img_to_array(image)[None])
        return self.xception.predict(pixels, verbose=0)

    def word_for_id(self, integer):
        for word, index in self.word_index.items():
            if index == integer:
                return word
        return None

    def generate(self, photo) -> str:
        import keras
        import numpy as np
        text = [self.start]
        for _ in range(self.max_length):
            sequence = keras.utils.pad_sequences([[self.word_index[w] for w in text]], maxlen=self.max_length)
            # our decoder returns every position's logits; the last one is what the seed's model returned
            word = self.word_for_id(int(np.argmax(self.decoder.predict([photo, sequence], verbose=0)[0, -1])))
            if word is None:
                break
            text.append(word)
            if word == self.end:
                break
        return " ".join(w for w in text[1:] if w != self.end)


def build_original_model(vocab_size: int, max_length: int):
    """The seed's training model: the same layers as our decoder (pipeline.decoder.ARCHITECTURE's sizes),
    but the LSTM returns its last state and a softmax ends it."""
    import keras
    from keras import layers
    from pipeline.decoder import ARCHITECTURE
    from pipeline.encoder import FEATURE_DIM
    units, dropout = ARCHITECTURE["units"], ARCHITECTURE["dropout"]
    features = keras.Input((FEATURE_DIM,))
    image = layers.Dense(units, activation="relu")(layers.Dropout(dropout)(features))
    words = keras.Input((max_length,))
    embedded = layers.Embedding(vocab_size, ARCHITECTURE["embedding_dim"], mask_zero=True)(words)
    text = layers.LSTM(units)(layers.Dropout(dropout)(embedded))
    merged = layers.Dense(units, activation="relu")(layers.add([image, text]))
    model = keras.Model([features, words], layers.Dense(vocab_size, activation="softmax")(merged))
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def original_batches(features, image_index, sequences, vocab_size: int, max_length: int):
    """The seed's data_generator: one batch per image holding every prefix of its captions."""
    import keras
    import numpy as np
    while True:
        for image in np.unique(image_index):
            x1, x2, y = [], [], []
            for sequence in sequences[image_index == image]:
                sequence = sequence[sequence != 0].tolist()
                for i in range(1, len(sequence)):
                    x1.append(features[image])
                    x2.append(keras.utils.pad_sequences([sequence[:i]], maxlen=max_length)[0])
                    y.append(keras.utils.to_categorical([sequence[i]], num_classes=vocab_size)[0])
            yield (np.array(x1), np.array(x2)), np.array(y)


def bench_original(captioner, model_folder: str, paths, features, beam: int) -> dict:
    import numpy as np
    from pipeline.artifact import load_keras_decoder
    original = OriginalCaptioner(captioner.image_encoder.model, load_keras_decoder(model_folder), captioner.vocab,
                                 captioner.max_length)
    original.generate(original.encode(paths[0]))  # warm-up, as a long-running app would be
    encode, generate, captions = [], [], []
    for path in paths:  # each image encoded, then captioned, as the original served it
        photos = []
        encode += timed(lambda p: photos.append(original.encode(p)), [path])
        generate += timed(lambda photo: captions.append(original.generate(photo)), photos)
    # ours on the same images, after: interleaved with Keras' predict calls it measured 10-20% slower
    captioner.caption(paths[0], beam)
    ours = timed(lambda p: captioner.caption(p, beam), paths)
    # the same decoding (greedy) from the same features: how often the two loops agree
    same = [original.generate(f[None]) == described.caption
            for f, described in zip(features, captioner.describe_features(features, 1, 1))]
    total = np.add(encode, generate)
    return {"original_encoder_p50_ms": p50_ms(encode),
            "original_decoder_p50_ms": p50_ms(generate),
            **summary(total, "original_end_to_end"),
            "original_mean_words": round(float(np.mean([len(c.split()) for c in captions])), 1),
            "original_matches_greedy": round(float(np.mean(same)), 3),
            "end_to_end_same_images_p50_ms": p50_ms(ours),
            # total time for the same images: the original (greedy) against Captioner.caption (beam)
            "end_to_end_speedup": round(float(np.sum(total) / np.sum(ours)), 1)}

"""Training throughput: our sequence-level tf.data pipeline against the original generator, same captions."""
import warnings

from .original import build_original_model, original_batches
from .timing import once


def fit(model, data, **kwargs):
    with warnings.catch_warnings():  # Keras warns when a first epoch ends a dataset of unknown length
        warnings.filterwarnings("ignore", "Your input ran out of data")
        model.fit(data, shuffle=False, verbose=0, **kwargs)


def bench_training(dataset, vocab, max_words: int, encoder, cache_dir, n_captions: int) -> dict:
    import keras
    import numpy as np
    from pipeline.decoder import build_decoder
    from pipeline.feature_cache import extract_features
    from pipeline.training import caption_sequences, make_dataset, masked_loss

    names = dataset.split("train")
    per_image = max(len(dataset.captions[n]) for n in names[:10])
    names = names[:max(1, -(-n_captions // per_image))]
    image_index, sequences = caption_sequences(dataset, names, vocab, max_words)
    image_index, sequences = image_index[:n_captions], sequences[:n_captions]
    names = names[:int(image_index.max()) + 1]
    features = extract_features(encoder, dataset.image_dir, names, cache_dir)
    words = int((sequences != 0).sum() - len(sequences))  # target words: every token after <start>
    keras.utils.set_random_seed(0)

    # ours: one example per caption, the whole caption at once, batches cut to their longest caption
    ds = make_dataset(features, image_index, sequences, batch_size=64, shuffle=True)
    model = build_decoder(len(vocab))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=masked_loss)
    fit(model, ds, epochs=1)  # traces the train step
    epochs = 4
    ours = once(lambda: fit(model, ds, epochs=epochs)) / epochs

    # the original: every prefix a sample, padded to the longest caption, one-hot targets, batch per image
    max_length = sequences.shape[1] - 1
    original = build_original_model(len(vocab), max_length)
    n_images = len(np.unique(image_index))
    fit(original, original_batches(features, image_index, sequences, len(vocab), max_length),
        steps_per_epoch=min(3, n_images), epochs=1)  # traces the train step
    batches = original_batches(features, image_index, sequences, len(vocab), max_length)
    theirs = once(lambda: fit(original, batches, steps_per_epoch=n_images, epochs=1))
    return {"train_captions": len(sequences), "train_words": words,
            "train_captions_per_second": round(len(sequences) / ours, 1),
            "train_words_per_second": round(words / ours, 1),
            "original_train_samples": words,  # one sample per prefix: as many as target words
            "original_train_captions_per_second": round(len(sequences) / theirs, 1),
            "original_train_words_per_second": round(words / theirs, 1),
            "train_speedup": round(theirs / ours, 1)}

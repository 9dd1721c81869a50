"""Does training Xception's exit flow together with the decoder pay, on dev?

  python experiments/tune_exit_flow.py --data ../shared/flickr8k --out runs/exit_flow_tuned --exit-flow-lr 1e-4
  python experiments/tune_exit_flow.py --data ../shared/flickr8k --out runs/exit_flow_frozen --exit-flow-lr 0

The activations entering the exit flow (19x19x728 per photo, float16: 526 KB) are computed once,
with the ImageNet backbone, into one .npy file under --cache-dir that a killed pass resumes and
training reads in place (3.7 GB for Flickr8k's train and dev photos: the feature cache would hold
them all in memory, in float32). Then a merge decoder is trained from scratch on them through the
exit flow (blocks 13-14: 6.8M of Xception's 20.9M weights, about 2 of its 17 GFLOPs a photo), the
exit flow learning too at --exit-flow-lr (0: frozen, the baseline, whose features are computed
once; its batch-norm statistics stay frozen either way). Each batch holds --batch-images photos
and all their captions, so each photo passes through the exit flow once an epoch, not once per
caption. After each epoch the dev photos are captioned (beam 3, the fluency rules) and scored with
CIDEr-D, as train.py scores them; the best epoch's captions go to OUT/dev.csv (evaluate.py's
per-image CSV), for compare.py's paired bootstrap between two runs. The run's figures go to
OUT/run.json.
A decision of the product's, not a part of it: the served encoder stays the frozen one unless dev
says otherwise.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402,F401  (first: it sets NumPy's and TensorFlow's environment)
from pipeline.cli import add_backbone_argument, add_cache_argument, run_main  # noqa: E402
from pipeline.formats import add_data_arguments, dataset_from_args  # noqa: E402
from evaluate import write_csv  # noqa: E402  (its per-image CSV, which compare.py reads)

EXIT_FLOW_INPUT = "block13_sepconv1_act"  # the exit flow's first layer; its input is 19x19x728 at 299x299


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for run.json and dev.csv")
    add_backbone_argument(p)
    add_cache_argument(p)
    p.add_argument("--exit-flow-lr", type=float, required=True, help="the exit flow's learning rate (0: frozen)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="the decoder's (default 1e-3)")
    p.add_argument("--halve-after", type=int, default=4,
                   help="halve both rates after this epoch and after each one that follows (default 4)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-images", type=int, default=16, help="photos a batch, with all their captions")
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--max-words", type=int, default=30)
    p.add_argument("--limit-images", type=int, help="the first N train photos and N/4 dev photos (for a smoke run)")
    p.add_argument("--seed", type=int, default=0)
    add_data_arguments(p)
    return p.parse_args(argv)


def exit_flow_inputs(backbone, dataset, names, path: Path):
    """(len(names), 19, 19, 728) float16 in a .npy file at `path`, written in batches; the count of
    rows done is committed beside it after each, so a killed pass goes on where it stopped."""
    import keras
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from pipeline.encoder import IMAGE_SIZE
    from pipeline.files import write_text_atomically
    from pipeline.images import load_image, to_model_input

    front = keras.Model(backbone.input, backbone.get_layer(EXIT_FLOW_INPUT).input)
    forward = tf.function(lambda pixels: front(keras.applications.xception.preprocess_input(
        tf.cast(pixels, tf.float32)), training=False))
    done_file = path.with_suffix(".done.json")
    done = json.loads(done_file.read_text())["rows"] if done_file.exists() and path.exists() else 0
    shape = (len(names), *front.output.shape[1:])
    array = (np.lib.format.open_memmap(path, mode="r+") if done else
             np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape))
    assert array.shape == shape, f"{path} holds {array.shape}, not {shape}: remove it"
    with tqdm(total=len(names), initial=done, desc="exit-flow inputs", unit="img") as bar:
        for start in range(done, len(names), 32):
            batch = names[start:start + 32]
            pixels = np.stack([to_model_input(load_image(dataset.image_path(n)), IMAGE_SIZE) for n in batch])
            array[start:start + len(batch)] = forward(pixels).numpy().astype(np.float16)
            array.flush()
            write_text_atomically(done_file, json.dumps({"rows": start + len(batch)}))
            bar.update(len(batch))
    return np.load(path, mmap_mode="r")


def run(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.artifact import make_config
    from pipeline.decoder import ARCHITECTURE, build_merge_lstm
    from pipeline.encoder import KerasEncoder
    from pipeline.files import write_text_atomically
    from pipeline.training import DevScorer, caption_sequences, masked_loss
    from pipeline.vocab import Vocabulary, clean_caption

    started = time.perf_counter()
    dataset = dataset_from_args(args)
    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if args.limit_images:
        train_names, dev_names = train_names[:args.limit_images], dev_names[:max(1, args.limit_images // 4)]
    vocab = Vocabulary.build([clean_caption(c) for n in train_names for c in dataset.captions[n]], args.min_count)

    encoder = KerasEncoder(args.backbone_weights, pooling="grid")
    backbone = encoder.model  # its exit flow is trained below: the fingerprint is taken first, of the frozen one
    fingerprint = encoder.fingerprint
    cache = Path(args.cache_dir) / "exit_flow_inputs"
    cache.mkdir(parents=True, exist_ok=True)
    names = train_names + dev_names
    inputs = exit_flow_inputs(backbone, dataset, names, cache / f"{fingerprint}-{len(names)}.npy")
    train_inputs, dev_inputs = inputs[:len(train_names)], inputs[len(train_names):]

    exit_flow = keras.Model(backbone.get_layer(EXIT_FLOW_INPUT).input, backbone.output)
    for layer in exit_flow.layers:  # batch-norm statistics from ImageNet, as fine-tuning usually keeps them
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    config = make_config(len(vocab), args.max_words + 1, fingerprint, ARCHITECTURE)
    decoder = build_merge_lstm(config)
    tuned = args.exit_flow_lr > 0
    decoder_optimizer = keras.optimizers.Adam(args.learning_rate)
    exit_optimizer = keras.optimizers.Adam(args.exit_flow_lr) if tuned else None

    image_index, sequences = caption_sequences(dataset, train_names, vocab, args.max_words)
    captions_of = [np.flatnonzero(image_index == i) for i in range(len(train_names))]

    def pooled(x, training):
        return tf.reduce_mean(exit_flow(x, training=training), axis=[1, 2])

    forward = tf.function(lambda x: pooled(tf.cast(x, tf.float32), training=False), reduce_retracing=True)

    def pooled_features(inputs):
        return np.concatenate([forward(np.asarray(inputs[i:i + 64])).numpy() for i in range(0, len(inputs), 64)])

    # frozen, the exit flow gives the same features every epoch: they are computed once
    frozen_train, frozen_dev = (None, None) if tuned else (pooled_features(train_inputs), pooled_features(dev_inputs))

    @tf.function(reduce_retracing=True)
    def train_step(x, rows, words, targets):
        """x: the photos' exit-flow inputs when it learns, their frozen features when it does not."""
        with tf.GradientTape() as tape:
            image = pooled(tf.cast(x, tf.float32), training=True) if tuned else x
            features = tf.gather(image, rows)
            loss = masked_loss(targets, decoder({"features": features, "words": words}, training=True))
        variables = decoder.trainable_variables + (exit_flow.trainable_variables if tuned else [])
        grads = tape.gradient(loss, variables)
        decoder_optimizer.apply_gradients(zip(grads[:len(decoder.trainable_variables)], decoder.trainable_variables))
        if tuned:
            exit_optimizer.apply_gradients(zip(grads[len(decoder.trainable_variables):], exit_flow.trainable_variables))
        return loss

    references = {n: dataset.captions[n] for n in dev_names}
    dev_score = DevScorer(list(references.values()), vocab, config)
    rng = np.random.default_rng(args.seed)
    history, best = [], None
    for epoch in range(args.epochs):
        if epoch >= args.halve_after:
            for optimizer in filter(None, (decoder_optimizer, exit_optimizer)):
                optimizer.learning_rate.assign(optimizer.learning_rate * 0.5)
        epoch_started, losses = time.perf_counter(), []
        order = rng.permutation(len(train_names))
        batches = range(0, len(order), args.batch_images)
        for step, start in enumerate(batches):
            photos = np.sort(order[start:start + args.batch_images])  # sorted: the memmap reads forward
            rows = [captions_of[p] for p in photos]
            batch = sequences[np.concatenate(rows)]
            length = int((batch != vocab.pad_id).sum(axis=1).max())
            x = np.asarray(train_inputs[photos]) if tuned else frozen_train[photos]
            losses.append(float(train_step(x,
                                           np.repeat(np.arange(len(photos)), list(map(len, rows))).astype(np.int32),
                                           batch[:, :length - 1], batch[:, 1:length])))
            if step % 50 == 0:
                print(f"epoch {epoch + 1} batch {step}/{len(batches)} loss {np.mean(losses[-50:]):.3f}",
                      file=sys.stderr, flush=True)
        dev_features = pooled_features(dev_inputs) if tuned else frozen_dev
        captions, cider = dev_score(decoder, dev_features)
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "dev_cider": round(cider, 4),
               "seconds": round(time.perf_counter() - epoch_started, 1)}
        history.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if best is None or cider > best["dev_cider"]:
            best = row
            write_csv(out / "dev.csv", dict(zip(dev_names, captions)), references)
    report = {"exit_flow_lr": args.exit_flow_lr, "learning_rate": args.learning_rate, "epochs": args.epochs,
              "halve_after": args.halve_after, "batch_images": args.batch_images, "seed": args.seed,
              "train_images": len(train_names), "dev_images": len(dev_names), "best": best, "history": history,
              "seconds": round(time.perf_counter() - started, 1)}
    write_text_atomically(out / "run.json", json.dumps(report, indent=2))
    return report


def main(argv=None):
    args = parse_args(argv)
    with run_main():
        print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()

"""Train the merge captioner on Flickr8k or your own data and save a model folder (see README.md).

Extracts Xception features (cached on disk), trains the decoder with early stopping on the dev
split, and writes config.json, vocab.json, decoder.weights.h5 and training_log.csv to --out.
An interrupted run resumes when started again with the same --out.

  python train.py --data ../shared/flickr8k --out runs/train
"""
import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from pipeline.artifact import TRAINING_LOG
from pipeline.cli import add_backbone_argument, add_cache_argument, add_engine_arguments, run_main
from pipeline.decoder import DECODERS, TRAINABLE
from pipeline.feature_cache import features_or_exit
from pipeline.formats import add_data_arguments, dataset_from_args
from pipeline.openvino_export import add_export_arguments
from pipeline.vocab import Vocabulary, clean_caption

log = logging.getLogger("train")
CHECKPOINTS = ".checkpoints"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # not weights/: that holds the published model and its metrics.json, which would then describe other weights
    p.add_argument("--out", default="runs/train", help="model folder to write (default: runs/train)")
    p.add_argument("--architecture", choices=TRAINABLE, default=TRAINABLE[0],
                   help=f"the decoder to train (pipeline/decoder.py; default {TRAINABLE[0]}); ensembles are made "
                        "of trained folders by ensemble.py")
    add_backbone_argument(p)
    add_cache_argument(p)
    p.add_argument("--epochs", type=int, default=30, help="most epochs; early stopping on dev CIDEr-D ends sooner")
    p.add_argument("--patience", type=int, default=3, help="epochs without a better dev CIDEr-D before stopping")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--min-count", type=int, default=5, help="keep words seen at least this often in train")
    p.add_argument("--max-words", type=int, default=30, help="longest caption, in words, trained and generated")
    p.add_argument("--remove-stop-words", action="store_true", help="drop stop words from captions (the "
                   "seed project's cleaning; makes captions terse and ungrammatical)")
    p.add_argument("--limit-images", type=int, help="train on the first N train images (and N/4 dev): for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="start over even if OUT holds an interrupted run")
    p.add_argument("--no-export", action="store_true", help="skip exporting the encoder for serving "
                   "(export_encoder.py can do it later); the folder then serves only with TensorFlow")
    p.add_argument("--features-from", choices=("keras", "exported"), default="keras",
                   help="the encoder whose features the decoder learns from: keras (default), or exported: export "
                        "the encoder first and learn from what the app will compute (e.g. with --precision bf16)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the model folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_data_arguments(p)
    add_engine_arguments(p, "the feature pass (the images not in the feature cache yet)")
    add_export_arguments(p)
    args = p.parse_args(argv)
    if args.no_export and args.features_from == "exported":
        p.error("--features-from exported needs the export that --no-export skips")
    return args


def main(argv=None):
    args = parse_args(argv)
    with run_main():
        train(args)


def train(args) -> None:
    started = time.time()
    dataset = dataset_from_args(args)  # before anything in --out is touched, and before TensorFlow loads
    # TensorFlow takes seconds to import: only after the arguments and the data are known to be good
    import keras

    from pipeline.artifact import (build_keras_decoder, exported_encoder_files, make_config, save_artifact,
                                   write_config, write_familiarity)
    from pipeline.encoder import KerasEncoder, pooled
    from pipeline.familiarity import Familiarity
    from pipeline.openvino_encoder import OpenVINOEncoder
    from pipeline.openvino_export import export
    from pipeline.training import (DEV_CIDER, DevCider, ResumableTraining, caption_sequences, make_dataset,
                                   masked_accuracy, masked_loss)

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out)
    checkpoints = out / CHECKPOINTS
    checkpoint = ResumableTraining(checkpoints, out / TRAINING_LOG, DEV_CIDER, args.patience)
    if args.fresh:
        checkpoint.clear()

    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if args.limit_images:
        train_names, dev_names = train_names[:args.limit_images], dev_names[:max(1, args.limit_images // 4)]
    vocab = Vocabulary.build([clean_caption(c, args.remove_stop_words) for n in train_names
                              for c in dataset.captions[n]], args.min_count)
    log.info("%d train / %d dev images, vocabulary of %d tokens", len(train_names), len(dev_names), len(vocab))

    architecture = DECODERS[args.architecture].trained_from
    encoder = KerasEncoder(args.backbone_weights, DECODERS[args.architecture].pooling(architecture))
    exported, feature_encoder = None, encoder
    if args.features_from == "exported":
        out.mkdir(parents=True, exist_ok=True)
        exported = export(encoder, out, args.weight_format, args.precision, args.float32_blocks)
        feature_encoder = OpenVINOEncoder(exported_encoder_files(out, exported), exported, encoder.fingerprint)
    log.info("features from %s", feature_encoder.name)
    features = features_or_exit(feature_encoder, dataset.image_dir, train_names + dev_names, args)
    train_features, dev_features = features[:len(train_names)], features[len(train_names):]
    train_index, train_seqs = caption_sequences(dataset, train_names, vocab, args.max_words, args.remove_stop_words)
    dev_index, dev_seqs = caption_sequences(dataset, dev_names, vocab, args.max_words, args.remove_stop_words)
    train_ds = make_dataset(train_features, train_index, train_seqs, args.batch_size, shuffle=True, seed=args.seed)
    dev_ds = make_dataset(dev_features, dev_index, dev_seqs, args.batch_size, shuffle=False)

    config = make_config(len(vocab), args.max_words + 1, encoder.fingerprint, architecture)
    model = build_keras_decoder(config)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=masked_loss, metrics=[masked_accuracy])
    # an interrupted run picks up after its last finished epoch when started again with the same OUT
    initial_epoch = checkpoint.restore(model)
    if initial_epoch:
        log.info("resuming the interrupted run in %s at epoch %d (pass --fresh to start over)", checkpoints,
                 initial_epoch + 1)
    epoch_start = {}
    callbacks = [
        DevCider(dev_features, [dataset.captions[n] for n in dev_names], vocab, config),
        keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=1, min_lr=1e-5),
        keras.callbacks.LambdaCallback(  # each epoch's wall time goes into the CSV log
            on_epoch_begin=lambda epoch, logs: epoch_start.update(t=time.perf_counter()),
            on_epoch_end=lambda epoch, logs: logs.update(seconds=round(time.perf_counter() - epoch_start["t"], 1))),
        checkpoint,  # last: it commits what the others added to the epoch's logs
    ]
    if not checkpoint.out_of_patience():  # a run killed after its last epoch has none left to train
        # a live progress bar on a terminal, one line per epoch in a log file
        model.fit(train_ds, validation_data=dev_ds, epochs=args.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a Dataset
                  verbose=1 if sys.stdout.isatty() else 2)
    checkpoint.load_best(model)

    history = checkpoint.history
    best = max(history, key=lambda row: row[DEV_CIDER])
    config["training"] = {
        "data": {"format": dataset.format, "source": dataset.source.name},
        "train_images": len(train_names), "train_captions": len(train_seqs),
        "dev_images": len(dev_names), "epochs_run": len(history), "best_epoch": int(best["epoch"]) + 1,
        "best_dev_cider": round(float(best[DEV_CIDER]), 4), "dev_loss": round(float(best["val_loss"]), 4),
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "min_count": args.min_count, "max_words": args.max_words,
        "remove_stop_words": args.remove_stop_words, "seed": args.seed, "features": feature_encoder.name,
        "train_seconds": round(sum(r.get("seconds", 0) for r in history), 1),
        "wall_seconds_this_run": round(time.time() - started, 1)}
    config["familiarity"] = write_familiarity(out, Familiarity.fit(pooled(train_features), pooled(dev_features)))
    save_artifact(out, model, vocab, config)
    if not args.no_export:  # the app serves the exported encoder; without one it needs TensorFlow
        log.info("exporting the encoder for serving (OpenVINO)")
        config["encoder"]["exported"] = exported or export(encoder, out, args.weight_format, args.precision,
                                                           args.float32_blocks)
        write_config(out, config)
    shutil.rmtree(checkpoints)
    log.info("saved model folder %s (best dev CIDEr-D %.4f at epoch %d)", out, float(best[DEV_CIDER]),
             int(best["epoch"]) + 1)
    print(json.dumps(config["training"], indent=2))
    if args.push_to_hub:
        from pipeline.hub import push_to_hub
        push_to_hub(out, args.push_to_hub, private=args.private, image_encoder=encoder,
                    commit_message=f"train.py: {len(history)} epochs, best dev CIDEr-D {float(best[DEV_CIDER]):.4f}")


if __name__ == "__main__":
    main()

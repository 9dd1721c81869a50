"""Train the merge captioner on Flickr8k or your own data and save a model folder (see README.md).

Extracts Xception features (cached on disk), trains the decoder with early stopping on the dev
split, and writes config.json, vocab.json, decoder.weights.h5 and training_log.csv to --out.
With --tune-exit-flow the backbone's last blocks learn with the decoder, and the folder keeps them.
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

import numpy as np

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
    tune = p.add_argument_group("tuning the backbone's exit flow with the decoder (pipeline/exit_flow.py)")
    tune.add_argument("--tune-exit-flow", action="store_true",
                      help="train Xception's exit flow (blocks 13-14) too, on cached activations entering it; the "
                           "folder then carries the tuned exit flow, which its exported encoder and features use "
                           "(Flickr8k dev CIDEr-D +0.053 over it frozen, docs/training.md)")
    tune.add_argument("--exit-flow-learning-rate", type=float, default=1e-4, help="its rate (default 1e-4)")
    tune.add_argument("--batch-images", type=int, default=16,
                      help="photos a batch, each with all its captions (default 16); --batch-size is not used")
    tune.add_argument("--halve-after", type=int, default=4, help="halve both rates at the start of each epoch "
                      "after this many (default 4); the rates are not reduced on a plateau")
    p.add_argument("--encoder-from", metavar="FOLDER",
                   help="learn from the backbone of this model folder (with its tuned exit flow; with --features-from "
                        "exported, from its exported encoder), which OUT then carries too: another decoder on the "
                        "same encoder, for an ensemble")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the model folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_data_arguments(p)
    add_engine_arguments(p, "the feature pass (the images not in the feature cache yet)")
    add_export_arguments(p)
    args = p.parse_args(argv)
    if args.no_export and args.features_from == "exported":
        p.error("--features-from exported needs the export that --no-export skips")
    if args.tune_exit_flow and args.encoder_from:
        p.error("--tune-exit-flow trains the backbone that --encoder-from would keep as it is: pick one")
    if args.tune_exit_flow and (args.features_from == "exported" or args.engine != "local"):
        p.error("--tune-exit-flow trains on Keras activations computed here: not with --features-from exported "
                "or --engine ray")
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

    from pipeline.artifact import build_keras_decoder, make_config, save_artifact, write_config, write_familiarity
    from pipeline.encoder import KerasEncoder, pooled
    from pipeline.familiarity import Familiarity
    from pipeline.openvino_export import export
    from pipeline.training import DEV_CIDER, ResumableTraining, caption_sequences

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
    pooling = DECODERS[args.architecture].pooling(architecture)
    encoder, carried = (encoder_of_folder(Path(args.encoder_from), pooling, args.backbone_weights, out)
                        if args.encoder_from else (KerasEncoder(args.backbone_weights, pooling), {}))
    config = make_config(len(vocab), args.max_words + 1, encoder.fingerprint, architecture)
    config["encoder"].update(carried)
    model = build_keras_decoder(config)
    train_data = caption_sequences(dataset, train_names, vocab, args.max_words, args.remove_stop_words)
    dev_data = caption_sequences(dataset, dev_names, vocab, args.max_words, args.remove_stop_words)
    references = [dataset.captions[n] for n in dev_names]
    fit = fit_with_exit_flow if args.tune_exit_flow else fit_on_features
    encoder, feature_name, train_features, dev_features = fit(
        args, encoder, model, config, vocab, dataset.image_dir, train_names + dev_names, train_data, dev_data,
        references, checkpoint)
    if args.tune_exit_flow:  # the backbone is now the tuned one: what the decoder reads, and is served with
        config["encoder"].update(weights_fingerprint=encoder.fingerprint,
                                 tuned_exit_flow={"from_fingerprint": config["encoder"]["weights_fingerprint"]})

    history = checkpoint.history
    best = max(history, key=lambda row: row[DEV_CIDER])
    config["training"] = {
        "data": {"format": dataset.format, "source": dataset.source.name},
        "train_images": len(train_names), "train_captions": len(train_data[1]),
        "dev_images": len(dev_names), "epochs_run": len(history), "best_epoch": int(best["epoch"]) + 1,
        "best_dev_cider": round(float(best[DEV_CIDER]), 4), "dev_loss": round(float(best["val_loss"]), 4),
        **({"batch_images": args.batch_images, "exit_flow_learning_rate": args.exit_flow_learning_rate,
            "halve_after": args.halve_after} if args.tune_exit_flow else {"batch_size": args.batch_size}),
        **({"encoder_from": Path(args.encoder_from).name} if args.encoder_from else {}),
        "learning_rate": args.learning_rate, "min_count": args.min_count, "max_words": args.max_words,
        "remove_stop_words": args.remove_stop_words, "seed": args.seed, "features": feature_name,
        "train_seconds": round(sum(r.get("seconds", 0) for r in history), 1),
        "wall_seconds_this_run": round(time.time() - started, 1)}
    config["familiarity"] = write_familiarity(out, Familiarity.fit(pooled(train_features), pooled(dev_features)))
    save_artifact(out, model, vocab, config)
    # the app serves the exported encoder; without one it needs TensorFlow
    if not args.no_export and "exported" not in config["encoder"]:  # not exported first, nor carried
        log.info("exporting the encoder for serving (OpenVINO)")
        config["encoder"]["exported"] = export(encoder, out, args.weight_format, args.precision,
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


def fit_on_features(args, encoder, model, config, vocab, image_dir, names, train_data, dev_data, references,
                     checkpoint):
    """Train the decoder on the backbone's cached features (Keras' fit). Returns the encoder to
    serve, the features' name, and the train and dev features. With --features-from exported the
    features are the exported encoder's: config.json's, or one exported into OUT first."""
    import keras

    from pipeline.training import DevCider, make_dataset, masked_accuracy, masked_loss

    feature_encoder = exported_encoder(args, encoder, config) if args.features_from == "exported" else encoder
    log.info("features from %s", feature_encoder.name)
    features = features_or_exit(feature_encoder, image_dir, names, args)
    train_count = len(names) - len(references)
    train_features, dev_features = features[:train_count], features[train_count:]
    train_ds = make_dataset(train_features, *train_data, args.batch_size, shuffle=True, seed=args.seed)
    dev_ds = make_dataset(dev_features, *dev_data, args.batch_size, shuffle=False)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=masked_loss, metrics=[masked_accuracy])
    # an interrupted run picks up after its last finished epoch when started again with the same OUT
    initial_epoch = checkpoint.restore(model)
    if initial_epoch:
        log.info("resuming the interrupted run in %s at epoch %d (pass --fresh to start over)", checkpoint.folder,
                 initial_epoch + 1)
    epoch_start = {}
    callbacks = [
        DevCider(dev_features, references, vocab, config),
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
    return encoder, feature_encoder.name, train_features, dev_features


def fit_with_exit_flow(args, encoder, model, config, vocab, image_dir, names, train_data, dev_data, references,
                     checkpoint):
    """Train the decoder and the backbone's exit flow together on the cached activations entering
    it (pipeline/exit_flow.py), then keep the tuned exit flow in --out and export it. Returns what
    fit_on_features does: the encoder is the tuned backbone, the features its export's (what
    the familiarity calibration is fitted on; the decoder learned from Keras')."""
    from pipeline.artifact import save_exit_flow
    from pipeline.encoder import KerasEncoder, exit_flow
    from pipeline.exit_flow import ExitFlowAndDecoder, exit_flow_inputs, fit, mean_loss
    from pipeline.feature_cache import default_cache_dir
    from pipeline.training import DEV_CIDER, DevScorer, make_dataset

    inputs = exit_flow_inputs(encoder, [Path(image_dir) / n for n in names], args.cache_dir or default_cache_dir())
    train_count = len(names) - len(references)
    train_inputs, dev_inputs = inputs[:train_count], inputs[train_count:]
    joint = ExitFlowAndDecoder(encoder.model, model, encoder.pooling, args.learning_rate, args.exit_flow_learning_rate)
    if checkpoint.restore(joint):
        log.info("resuming the interrupted run in %s at epoch %d (pass --fresh to start over)", checkpoint.folder,
                 len(checkpoint.history) + 1)
    scorer = DevScorer(references, vocab, config)

    def score_dev(joint) -> dict:
        features = joint.encode(dev_inputs)
        return {"val_loss": mean_loss(joint.decoder, make_dataset(features, *dev_data, 64, shuffle=False)),
                DEV_CIDER: scorer(joint.decoder, features)[1]}

    image_index, sequences = train_data
    captions_of = [np.flatnonzero(image_index == i) for i in range(train_count)]
    fit(joint, train_inputs, captions_of, sequences, vocab.pad_id, score_dev, checkpoint, args.epochs,
        args.batch_images, args.halve_after, args.seed)
    checkpoint.load_best(joint)
    tuned = KerasEncoder(args.backbone_weights, encoder.pooling, save_exit_flow(args.out, joint.exit_flow))
    name = f"{tuned.name}, exit flow tuned"
    if args.no_export:
        joint.exit_flow.set_weights(exit_flow(tuned.model).get_weights())  # the float16 values, as they are served
        return tuned, name, joint.encode(train_inputs), joint.encode(dev_inputs)
    # exported now, so that the familiarity calibration is fitted on what the app computes (and the
    # features that scst.py reads next are cached)
    features = features_or_exit(exported_encoder(args, tuned, config), image_dir, names, args)
    return tuned, name, features[:train_count], features[train_count:]


def exported_encoder(args, encoder, config: dict):
    """`encoder` exported into --out as config.json's encoder.exported says (exported first when it
    says nothing yet), loaded as the app serves it."""
    from pipeline.artifact import exported_encoder_files
    from pipeline.openvino_encoder import OpenVINOEncoder
    from pipeline.openvino_export import export

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "exported" not in config["encoder"]:
        config["encoder"]["exported"] = export(encoder, out, args.weight_format, args.precision, args.float32_blocks)
    exported = config["encoder"]["exported"]
    return OpenVINOEncoder(exported_encoder_files(out, exported), exported, encoder.fingerprint)


def encoder_of_folder(source: Path, pooling: str, backbone_weights, out: Path):
    """--encoder-from: the Keras backbone that the model folder `source` reads (with its tuned exit
    flow), with its files besides the decoder copied into OUT; and what its config.json says of its
    encoder beyond make_config's (the export, the tuned exit flow), for OUT's."""
    from pipeline.artifact import copy_companion_files, read_config
    from pipeline.captioner import keras_encoder

    source_config = read_config(source)
    if source_config["encoder"].get("pooling", "avg") != pooling:
        raise SystemExit(f"error: {source}'s encoder gives {source_config['encoder'].get('pooling', 'avg')!r} "
                         f"features; this decoder reads {pooling!r}")
    encoder = keras_encoder(source, source_config, backbone_weights)
    copy_companion_files(source, out, source_config)
    return encoder, {key: value for key, value in source_config["encoder"].items()
                     if key in ("exported", "tuned_exit_flow")}


if __name__ == "__main__":
    main()

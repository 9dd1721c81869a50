"""Fine-tune a trained model folder with self-critical sequence training (the second stage).

  python scst.py --model runs/train --data ../shared/flickr8k --out runs/scst

The decoder samples captions for each training photo and is rewarded by their CIDEr-D against
the photo's references (pipeline/scst.py). Features come from the encoder the folder serves
(its exported encoder, else Keras), so the decoder is tuned to what the app computes; the
folder written to --out carries that encoder too. The kept epoch is the one whose dev captions
(beam search) score best in CIDEr-D, as in train.py, or the starting weights when no epoch beats
them. An interrupted run resumes when started again with the same --out.
"""
import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.artifact import SELF_CRITICAL_LOG, ArtifactError
from pipeline.captioner import ENCODER_CHOICES, load_artifact
from pipeline.cli import (add_backbone_argument, add_cache_argument, add_engine_arguments, add_model_folder_argument,
                          run_main)
from pipeline.feature_cache import features_or_exit
from pipeline.formats import DatasetError, add_data_arguments, dataset_from_args
from pipeline.scst import BASELINES

log = logging.getLogger("scst")
CHECKPOINTS = ".checkpoints-scst"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_folder_argument(p, "runs/train", "the model folder to start from, trained by train.py")
    p.add_argument("--out", default="runs/scst", help="model folder to write (default: runs/scst)")
    p.add_argument("--encoder", choices=ENCODER_CHOICES, default="auto",
                   help="features from: auto (default) is what the folder serves, its exported encoder")
    add_backbone_argument(p)
    add_cache_argument(p)
    p.add_argument("--epochs", type=int, default=15, help="most epochs; early stopping on dev CIDEr-D ends sooner")
    p.add_argument("--patience", type=int, default=3, help="epochs without a better dev CIDEr-D before stopping")
    p.add_argument("--batch-size", type=int, default=32, help="photos per update")
    p.add_argument("--samples", type=int, default=5, help="captions sampled per photo")
    p.add_argument("--baseline", choices=BASELINES, default="samples", help="what a sample's reward is measured "
                   "against: the mean of the photo's other samples' (default; --samples at least 2), or its greedy "
                   "caption's")
    # measured on Flickr8k dev (README): at 1.0 the samples score far below the decoder's own best
    # captions and one epoch made it blander (CIDEr-D 0.465 -> 0.419); at 0.5 it rose to 0.490
    p.add_argument("--temperature", type=float, default=0.5, help="sample from softmax(logits / T) (default 0.5): "
                   "below 1, captions nearer the decoder's best ones")
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--limit-images", type=int, help="train on the first N train images (and N/4 dev): for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="start over even if OUT holds an interrupted run")
    add_data_arguments(p)
    add_engine_arguments(p, "the feature pass (the images not in the feature cache yet)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.temperature <= 0:
        p.error("--temperature must be above 0")
    if args.samples < 1 or (args.baseline == "samples" and args.samples < 2):
        p.error("--samples must be at least 1, and at least 2 with --baseline samples (the mean of the others)")
    if Path(args.out).resolve() == Path(args.model).resolve():
        p.error("--out must be another folder than --model: the cross-entropy model is kept as it is")
    return args


def main(argv=None):
    args = parse_args(argv)
    with run_main(ArtifactError, DatasetError):
        fine_tune(args)


def fine_tune(args) -> None:
    started = time.time()
    source, out = Path(args.model), Path(args.out)
    _, vocab, config = load_artifact(source)
    dataset = dataset_from_args(args)
    import keras

    from pipeline.artifact import (WEIGHTS_FILE, build_keras_decoder, copy_companion_files, save_artifact,
                                   write_familiarity)
    from pipeline.captioner import load_image_encoder
    from pipeline.decoder import decoder_steps, layer_weights
    from pipeline.encoder import pooled
    from pipeline.familiarity import Familiarity
    from pipeline.scst import CiderD, SelfCriticalStep, leave_one_out_advantages, reward_references, sample_captions
    from pipeline.training import DEV_CIDER, DevCider, ResumableTraining

    keras.utils.set_random_seed(args.seed)
    checkpoint = ResumableTraining(out / CHECKPOINTS, out / SELF_CRITICAL_LOG, DEV_CIDER, args.patience)
    if args.fresh:
        checkpoint.clear()
    train_names, dev_names = dataset.split("train"), dataset.split("dev")
    if args.limit_images:
        train_names, dev_names = train_names[:args.limit_images], dev_names[:max(1, args.limit_images // 4)]
    image_encoder = load_image_encoder(source, config, args.encoder, args.backbone_weights)
    log.info("features from %s", image_encoder.name)
    features = features_or_exit(image_encoder, dataset.image_dir, train_names + dev_names, args)
    train_features, dev_features = features[:len(train_names)], features[len(train_names):]
    reward = CiderD(reward_references({name: dataset.captions[name] for name in train_names}))

    model = build_keras_decoder(config)
    model.load_weights(source / WEIGHTS_FILE)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))  # ResumableTraining saves its state
    initial_epoch = checkpoint.restore(model)
    if initial_epoch:
        log.info("resuming the interrupted run in %s at epoch %d (pass --fresh to start over)",
                 out / CHECKPOINTS, initial_epoch + 1)
    update = SelfCriticalStep(model, args.temperature)
    dev_cider = DevCider(dev_features, [dataset.captions[n] for n in dev_names], vocab, config)
    for callback in (dev_cider, checkpoint):
        callback.set_model(model)
    before = {}
    dev_cider.on_epoch_end(-1, before)  # the starting model's score (a resumed run scores it again)
    log.info("dev CIDEr-D before self-critical training: %.4f", before[DEV_CIDER])
    banned = (vocab.pad_id, vocab.start_id, vocab.unk_id)

    for epoch in range(initial_epoch, args.epochs):
        if checkpoint.out_of_patience():
            break
        epoch_start = time.perf_counter()
        rng = np.random.default_rng([args.seed, epoch])  # a resumed epoch draws what it would have drawn
        order = rng.permutation(len(train_names))
        mean_rewards, losses = [], []
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for start in bar:
            batch = order[start:start + args.batch_size]
            steps = decoder_steps(layer_weights(model), config)
            captions = sample_captions(steps, train_features[batch], args.samples, config["max_length"],
                                       vocab.start_id, vocab.end_id, banned, rng, args.temperature)
            scores = reward.captions([train_names[i] for i in np.repeat(batch, args.samples)], captions, vocab)
            if args.baseline == "greedy":
                greedy = sample_captions(steps, train_features[batch], 1, config["max_length"], vocab.start_id,
                                         vocab.end_id, banned, None)
                advantages = scores - np.repeat(reward.captions([train_names[i] for i in batch], greedy, vocab),
                                                args.samples)
            else:
                advantages = leave_one_out_advantages(scores, args.samples)
            length = int((captions != vocab.pad_id).sum(axis=1).max())
            targets = captions[:, :length]
            words = np.concatenate([np.full((len(captions), 1), vocab.start_id), targets[:, :-1]], axis=1)
            loss = update(np.repeat(train_features[batch], args.samples, axis=0), words, targets,
                          advantages.astype(np.float32))
            mean_rewards.append(scores.mean())
            losses.append(float(loss))
            bar.set_postfix(reward=f"{np.mean(mean_rewards[-20:]):.3f}")
        logs = {"reward": float(np.mean(mean_rewards)), "loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - epoch_start, 1)}
        for callback in (dev_cider, checkpoint):  # checkpoint last: it commits the dev CIDEr-D with the epoch
            callback.on_epoch_end(epoch, logs)
        log.info("epoch %d: mean reward %.4f, dev CIDEr-D %.4f, %.0f s", epoch + 1, logs["reward"], logs[DEV_CIDER],
                 logs["seconds"])
    history = checkpoint.history
    best = max(history, key=lambda row: row[DEV_CIDER])
    improved = best[DEV_CIDER] > before[DEV_CIDER]
    if improved:
        checkpoint.load_best(model)
    else:  # on a small dataset the decoder may only fit the training references better
        log.warning("no epoch beat the starting model's dev CIDEr-D (%.4f against %.4f): keeping its weights",
                    best[DEV_CIDER], before[DEV_CIDER])
        model.load_weights(source / WEIGHTS_FILE)
    config.setdefault("training", {})["self_critical"] = {
        "from": source.name, "data": {"format": dataset.format, "source": dataset.source.name},
        "train_images": len(train_names), "dev_images": len(dev_names),
        "features": image_encoder.name, "epochs_run": len(history), "best_epoch": int(best["epoch"]) + 1,
        "best_dev_cider": round(float(best[DEV_CIDER]), 4), "dev_cider_before": round(float(before[DEV_CIDER]), 4),
        "kept": "best epoch" if improved else "starting weights", "samples": args.samples, "baseline": args.baseline,
        "temperature": args.temperature, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "seed": args.seed,
        "train_seconds": round(sum(r.get("seconds", 0) for r in history), 1),
        "wall_seconds_this_run": round(time.time() - started, 1)}
    copy_companion_files(source, out, config)
    config["familiarity"] = write_familiarity(out, Familiarity.fit(pooled(train_features), pooled(dev_features)))  # on the features it serves
    save_artifact(out, model, vocab, config)  # config.json last: it names the encoder files copied above
    shutil.rmtree(out / CHECKPOINTS)
    log.info("saved model folder %s (best dev CIDEr-D %.4f at epoch %d)", out, float(best[DEV_CIDER]),
             int(best["epoch"]) + 1)
    print(json.dumps(config["training"]["self_critical"], indent=2))


if __name__ == "__main__":
    main()

"""Join trained model folders into one ensemble folder: their next-word distributions are averaged.

  python ensemble.py runs/seed0 runs/seed1 --out runs/ensemble

The members must share the vocabulary, the caption length and the backbone (train.py runs on the
same data with other seeds do). A member folder that is itself an ensemble gives its members
(`python ensemble.py weights runs/attention --out runs/four` adds a decoder to weights/' three). The folder written holds one decoder file with every member's
layers (float16 by default: half the size, with 99.7% of the dev captions unchanged), and the
exported encoder and familiarity calibration of the first member, or of the first attention-lstm
member where there is one: its encoder gives the grid of regions, which the merge members read as
its mean. It loads and serves like any model folder, and scst.py can fine-tune it as a whole.
"""
import argparse
import logging
from pathlib import Path

from pipeline.artifact import MAX_FILE_BYTES, WEIGHTS_DTYPES, ArtifactError, read_config, read_vocab
from pipeline.decoder import ENSEMBLE_MEANS, MEMBER_STEPS, decoder_pooling
from pipeline.cli import run_main

log = logging.getLogger("ensemble")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+", type=Path,
                   help="model folders (merge-lstm or attention-lstm decoders) to join; at least 2")
    p.add_argument("--out", required=True, type=Path, help="ensemble model folder to write")
    p.add_argument("--mean", choices=ENSEMBLE_MEANS, default="geometric",
                   help="how the members' next-word distributions are averaged (default geometric: the "
                        "normalised mean of their log-probabilities, 0.004-0.011 above arithmetic in dev "
                        "CIDEr-D with 2-4 Flickr8k decoders; arithmetic: the mean of their probabilities)")
    p.add_argument("--weights-dtype", choices=WEIGHTS_DTYPES, default="float16",
                   help="how the decoder file stores the weights (default float16: each member 4.9 MB "
                        f"instead of 9.7, so up to 5 fit the {MAX_FILE_BYTES / 1e6:.0f} MB a model folder's file "
                        "may take; on Flickr8k dev 99.7%% of the captions and CIDEr-D to 0.001 were unchanged); "
                        "both load as float32")
    args = p.parse_args(argv)
    if len(args.members) < 2:
        p.error("an ensemble needs at least 2 member folders")
    if args.out.resolve() in {m.resolve() for m in args.members}:
        p.error("--out must be a new folder, not one of the members")
    return args


def check_members(folders: list[Path]) -> list[dict]:
    """The members' configs, refused unless they fit together."""
    configs = [read_config(folder) for folder in folders]
    first, vocab = configs[0], read_vocab(folders[0], configs[0]).tokens
    for folder, config in zip(folders, configs):
        if config["architecture"]["name"] not in (*MEMBER_STEPS, "ensemble"):
            raise ArtifactError(f"{folder}: a {config['architecture']['name']} decoder cannot be a member")
        for key in ("vocab_size", "max_length"):
            if config[key] != first[key]:
                raise ArtifactError(f"{folder}: {key} {config[key]} differs from {folders[0]}'s {first[key]}")
        if config["encoder"]["weights_fingerprint"] != first["encoder"]["weights_fingerprint"]:
            raise ArtifactError(f"{folder} was trained on other backbone weights than {folders[0]}")
        if read_vocab(folder, config).tokens != vocab:
            raise ArtifactError(f"{folder}: its vocabulary differs from {folders[0]}'s")
    return configs


def member_decoders(folders: list[Path], configs: list[dict]):
    """(architecture, weights by layer name) of each member: a folder's decoder, or each of an
    ensemble folder's members."""
    from pipeline.artifact import load_keras_decoder
    from pipeline.decoder import member_prefix

    for folder, config in zip(folders, configs):
        layers = {layer.name: layer.get_weights() for layer in load_keras_decoder(folder).layers if layer.weights}
        if config["architecture"]["name"] != "ensemble":
            yield config["architecture"], layers
            continue
        for i, member in enumerate(config["architecture"]["members"]):
            prefix = member_prefix(i)
            yield member, {name[len(prefix):]: weights for name, weights in layers.items() if name.startswith(prefix)}


def provenance(folder: Path, config: dict) -> list[dict]:
    """config.json's training.ensemble_of entries for one member folder (an ensemble's are its members')."""
    if config["architecture"]["name"] == "ensemble":
        return [{**entry, "folder": f"{folder.name}/{entry.get('folder', '')}"}
                for entry in config.get("training", {}).get("ensemble_of", [])]
    return [{"folder": folder.name, **config.get("training", {})}]


def main(argv=None):
    args = parse_args(argv)
    with run_main(ArtifactError):
        configs = check_members(args.members)
    from pipeline.artifact import FORMAT_VERSION, copy_companion_files, save_artifact
    from pipeline.decoder import build_keras, member_prefix

    # the encoder (and its calibration) that serves every member: the grid, where one attends to it
    base = next((i for i, c in enumerate(configs) if decoder_pooling(c["architecture"]) == "grid"), 0)
    members = list(member_decoders(args.members, configs))
    config = {**configs[base], "format_version": FORMAT_VERSION,
              "architecture": {"name": "ensemble", "mean": args.mean, "members": [m for m, _ in members]},
              "weights_dtype": args.weights_dtype,
              "training": {"ensemble_of": [entry for m, c in zip(args.members, configs) for entry in provenance(m, c)]}}
    model = build_keras(config)
    for i, (_, layers) in enumerate(members):
        for name, weights in layers.items():
            model.get_layer(member_prefix(i) + name).set_weights(weights)
    copy_companion_files(args.members[base], args.out, config)
    save_artifact(args.out, model, read_vocab(args.members[base], configs[base]), config)
    log.info("saved the ensemble of %d decoders to %s", len(members), args.out)


if __name__ == "__main__":
    main()

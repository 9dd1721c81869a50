"""bench.py's default run: every measurement on the model in --model, the table, the JSON."""
import sys
import time

from pipeline.formats import dataset_from_args

from .latency import bench_batching, bench_decoder, bench_encoder, bench_end_to_end
from .original import bench_original
from .report import check_targets, device, table, write_json
from .serving import bench_install_size, bench_serving
from .timing import cycle
from .training import bench_training


def run(args) -> dict:
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    from pipeline import Captioner
    from pipeline.feature_cache import extract_features

    dataset = dataset_from_args(args)
    test = dataset.split("test")
    captioner = Captioner.from_pretrained(args.model, args.backbone_weights, encoder="keras")
    paths = [dataset.image_path(n) for n in cycle(test, args.latency_images)]
    features = extract_features(captioner.image_encoder, dataset.image_dir, cycle(test, args.latency_images),
                                args.cache_dir)

    report = {"device": device(tensorflow=tf.__version__, keras=keras.__version__),
              "settings": {"model": str(args.model), "backbone_weights": captioner.image_encoder.source,
                           "images": args.latency_images, "original_images": args.original_images,
                           "beam_size": args.beam_size, "quick": args.quick}}
    steps = [
        ("encoder", lambda: bench_encoder(captioner, paths)),
        ("decoder", lambda: bench_decoder(captioner, features)),
        ("end to end", lambda: bench_end_to_end(captioner, paths, args.beam_size)),
        ("original approach", lambda: bench_original(captioner, args.model, paths[:args.original_images],
                                                     features[:args.original_images], args.beam_size)),
        ("batching", lambda: bench_batching(captioner, paths, args.beam_size)),
        ("training", lambda: bench_training(dataset, captioner.vocab, captioner.max_length - 1,
                                            captioner.image_encoder, args.cache_dir, args.train_captions)),
        ("serving without TensorFlow, and the app", lambda: bench_serving(
            args.model, captioner.image_encoder.backbone_weights, paths, paths[0], args.beam_size, args.rounds,
            args.baseline_model)),
    ]
    if args.install_size:
        steps.append(("install size", bench_install_size))
    for name, step in steps:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        report.update(step())
    report["decoder_to_encoder_ratio"] = round(report["decoder_beam3_p50_ms"] / report["encoder_batch1_p50_ms"], 3)
    report["targets"] = check_targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)

    print(table(report))
    print(f"\n{report['settings']['images']} test images per latency, beam {args.beam_size} end to end, "
          f"{report['train_captions']} training captions; {report['seconds']} s in all.")
    write_json(args.json, report)
    return report

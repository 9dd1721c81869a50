"""Batch captioning (bench.py --throughput): the exported encoder alone against caption.py's engines."""
import time
from pathlib import Path

from pipeline.formats import dataset_from_args

from .report import device, write_json
from .timing import once, timed

TARGET = 0.9  # local_to_encoder_ratio, at least
ROUND = 4  # batches per turn of the encoder alone and the local engine


def bench_throughput(model_folder: str, paths: list[str], batch_size: int, beam_size: int) -> dict:
    """Images/s of the encoder alone on decoded pixels, and of caption.py's two engines on the files.

    The encoder alone and the local engine take turns on rounds of a few batches (the same images
    in each turn), so that a busy spell of a shared machine slows both; Ray runs once over all the
    images after them (its actors start and load the model inside its time).
    """
    import tempfile

    import numpy as np

    from pipeline.batch import caption_files, caption_record
    from pipeline.model_source import load_model
    from pipeline.ray_engine import caption_with_ray, connect
    from pipeline.records import RecordFile

    captioner, location = load_model(model_folder)
    encode = captioner.image_encoder.encode_pixels
    encode(np.stack([captioner.preprocess(path) for path in paths[:batch_size]]))  # warm-up
    seconds = {"encoder": 0.0, "local": 0.0, "ray": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        def open_records(name):
            return RecordFile(Path(tmp, f"{name}.jsonl"), list(caption_record("", None, 0)))

        with open_records("local") as records:
            for first in range(0, len(paths), ROUND * batch_size):
                images = paths[first:first + ROUND * batch_size]
                pixels = [captioner.preprocess(path) for path in images]
                seconds["encoder"] += sum(timed(lambda i: encode(np.stack(pixels[i:i + batch_size])),
                                                range(0, len(pixels), batch_size)))
                seconds["local"] += once(lambda: caption_files(captioner, images, records.write,
                                                               batch_size=batch_size, beam_size=beam_size))
        connect()
        with open_records("ray") as records:
            seconds["ray"] = once(lambda: caption_with_ray(location, "auto", paths, records.write,
                                                           batch_size=batch_size, beam_size=beam_size))
    out = {f"{name}_images_per_second": round(len(paths) / value, 2) for name, value in seconds.items()}
    for engine in ("local", "ray"):
        out[f"{engine}_to_encoder_ratio"] = round(seconds["encoder"] / seconds[engine], 3)  # 0.896 is not 0.9
    return out


def run(args) -> dict:
    """bench.py --throughput: measure, print the table, write --json."""
    dataset = dataset_from_args(args)
    paths = [str(dataset.image_path(name)) for name in dataset.split("test")[:args.throughput]]
    started = time.perf_counter()
    report = {"device": device(),
              "settings": {"model": str(args.model), "images": len(paths), "batch_size": args.batch_size,
                           "beam_size": args.beam_size},
              **bench_throughput(args.model, paths, args.batch_size, args.beam_size)}
    report["target_met"] = report["local_to_encoder_ratio"] >= TARGET
    report["seconds"] = round(time.perf_counter() - started, 1)
    print("| Batch captioning | images/s | ratio to the encoder alone |\n| --- | --- | --- |")
    print(f"| Encoder alone, decoded batches of {args.batch_size} | {report['encoder_images_per_second']:g} | 1 |")
    for engine in ("local", "ray"):
        print(f"| caption.py --engine {engine} | {report[f'{engine}_images_per_second']:g} | "
              f"{report[f'{engine}_to_encoder_ratio']:g} |")
    print(f"\n{len(paths)} test images, beam {args.beam_size}; local >= {TARGET}x the encoder: "
          f"{'met' if report['target_met'] else 'MISSED'}; {report['seconds']} s in all.")
    write_json(args.json, report)
    return report

"""Bursts of single photos (bench.py --serving-modes): one request at a time against Gradio's
batch=True and OpenVINO's THROUGHPUT hint."""
import json
from pathlib import Path

from pipeline.formats import dataset_from_args

from .report import device, write_json
from .timing import cycle, rate


def bench_serving_modes(model_folder: str, paths: list[str], beam_size: int, seconds: float = 20) -> dict:
    """Photos one request at a time, as the app serves them today, against the two ways of serving
    bursts faster that Gradio and OpenVINO offer: Gradio's batch=True (waiting photos encoded and
    searched together, here 8) and OpenVINO's THROUGHPUT hint (several single-photo inferences at
    once). Each runs for `seconds` on the same decoded photos; images/s and the ratio to today's."""
    import numpy as np
    import openvino as ov

    from pipeline import Captioner
    from pipeline.artifact import exported_encoder_files, read_config
    
    captioner = Captioner.from_pretrained(model_folder, encoder="exported")
    loaded = [captioner.preprocess(path) for path in cycle(paths, 16)]

    one_by_one = rate(lambda: captioner.describe_batch(loaded[:1], beam_size), 1, seconds)
    batched = rate(lambda: captioner.describe_batch(loaded[:8], beam_size), 8, seconds)
    # both hints on the same whole graph, in the folder's compute precision (the served encoder keeps
    # its first blocks in f32, so its own figure is not the one to compare)
    exported = read_config(Path(model_folder))["encoder"]["exported"]
    files = exported_encoder_files(Path(model_folder), exported)
    core = ov.Core()
    model = core.read_model(files[0].read_text(encoding="utf-8"),
                            ov.Tensor(np.concatenate([np.fromfile(p, np.uint8) for p in files[1:]])))
    pixels = [np.ascontiguousarray(item[None], np.uint8) for item in loaded]
    precision = captioner.image_encoder.precision

    def hinted(hint: str):
        """(streams, photos each step, a step) for the graph compiled with `hint`, its requests all busy."""
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision})
        streams = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        requests = ov.AsyncInferQueue(compiled, streams)

        def step():
            for i in range(streams * 2):
                requests.start_async([pixels[i % len(pixels)]])
            requests.wait_all()
        return streams, streams * 2, step

    _, per_step, latency_step = hinted("LATENCY")
    encoder_only = rate(latency_step, per_step, seconds)
    streams, per_step, throughput_step = hinted("THROUGHPUT")
    throughput_mode = rate(throughput_step, per_step, seconds)
    return {"one_photo_a_request_images_per_second": round(one_by_one, 1),
            "gradio_batch_of_8_images_per_second": round(batched, 1),
            "gradio_batch_of_8_ratio": round(batched / one_by_one, 2),
            "encoder_latency_mode_images_per_second": round(encoder_only, 1),
            "encoder_throughput_mode_images_per_second": round(throughput_mode, 1),
            "openvino_throughput_mode_streams": streams,
            "openvino_throughput_mode_ratio": round(throughput_mode / encoder_only, 2)}


def run(args) -> dict:
    """bench.py --serving-modes: measure on the first 16 test images, print the JSON, write --json."""
    dataset = dataset_from_args(args)
    paths = [str(dataset.image_path(name)) for name in dataset.split("test")[:16]]
    report = {"device": device(), **bench_serving_modes(args.model, paths, args.beam_size)}
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    return report

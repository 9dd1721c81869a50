"""Latency of the Keras path in this process: encoder, decoder, end to end, and batching."""
from .timing import cycle, once, p50_ms, summary, timed


def bench_encoder(captioner, paths) -> dict:
    import numpy as np
    from pipeline.encoder import IMAGE_SIZE
    from pipeline.images import load_image, to_model_input
    encoder = captioner.image_encoder
    load = timed(lambda p: to_model_input(load_image(p), IMAGE_SIZE), paths)
    pixels = np.stack([to_model_input(load_image(p), IMAGE_SIZE) for p in paths])
    for i in range(5):  # warm-up
        encoder.encode_pixels(pixels[i % len(pixels)][None])
    out = {"image_load_p50_ms": p50_ms(load)}
    out.update(summary(timed(lambda i: encoder.encode_pixels(pixels[i][None]), range(len(pixels))),
                       "encoder_batch1"))
    batch = np.stack(cycle(list(pixels), 32))
    encoder.encode_pixels(batch)
    repeats = 1 if len(paths) < 8 else 3
    seconds = sum(timed(lambda _: encoder.encode_pixels(batch), range(repeats)))
    out["encoder_batch32_images_per_second"] = round(32 * repeats / seconds, 1)
    return out


def bench_decoder(captioner, features) -> dict:
    """The decoder alone: features to the best caption (describe_features adds the familiarity, 0.5 ms)."""
    import numpy as np

    from pipeline.captioner import decode

    def best_caption(rows, beam):
        return decode(captioner.steps, captioner.vocab, rows, beam, captioner.max_length)[0][0].text

    out = {}
    for name, beam in (("greedy", 1), ("beam3", 3), ("beam5", 5)):
        best_caption(features[:2], beam)  # warm-up
        captions = []
        seconds = timed(lambda row: captions.append(best_caption(features[row:row + 1], beam)), range(len(features)))
        out.update(summary(seconds, f"decoder_{name}"))
        if beam == 3:
            out["decoder_beam3_mean_words"] = round(float(np.mean([len(c.split()) for c in captions])), 1)
    return out


def bench_end_to_end(captioner, paths, beam: int) -> dict:
    captioner.caption(paths[0], beam)
    return summary(timed(lambda p: captioner.caption(p, beam), paths), "end_to_end")


def caption_in_batches(captioner, paths, beam: int, batch_size: int = 32) -> None:
    """The photos' captions, `batch_size` photos to an encoder pass and a beam search."""
    for i in range(0, len(paths), batch_size):
        captioner.describe_batch([captioner.preprocess(path) for path in paths[i:i + batch_size]], beam)


def bench_batching(captioner, paths, beam: int) -> dict:
    paths = cycle(paths, 32)
    caption_in_batches(captioner, paths[:2], beam)
    batched = once(lambda: caption_in_batches(captioner, paths, beam))
    single = once(lambda: [captioner.caption(path, beam) for path in paths])
    return {"caption_batch_images_per_second": round(len(paths) / batched, 1),
            "caption_one_by_one_images_per_second": round(len(paths) / single, 1),
            "batching_speedup": round(single / batched, 2)}

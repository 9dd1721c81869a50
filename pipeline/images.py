"""Turning any user image (path, bytes, PIL image or array) into an RGB PIL image."""
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 80_000_000  # refuse decompression bombs well before they exhaust memory
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# The most memory one image may take to decode and reduce: a few hundred KB of PNG or TIFF can
# describe tens of megapixels, and that is the largest thing a request holds (the image is
# reduced before anything else is done with it). 256 MiB is 64 megapixels of RGB.
MAX_DECODED_BYTES = 256 * 2**20


class ImageError(ValueError):
    """The input is not an image we can caption (not an image, truncated, too large, ...)."""


def bytes_to_reduce(image: Image.Image) -> int:
    """What Pillow allocates to decode `image` and resize it: 1 byte a pixel for 1/L/P, 2 for
    16-bit, 4 for the rest, and twice that with alpha (resizing makes a premultiplied copy)."""
    per_pixel = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    return image.width * image.height * per_pixel * (2 if image.mode in ("LA", "RGBA") else 1)


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """`image` resized in place to at most `max_side` on its longer side, in its own mode."""
    if max(image.size) > max_side:
        # Pillow cannot reduce() 16-bit images, which thumbnail's reducing_gap uses
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC,
                        reducing_gap=None if image.mode.startswith("I;16") else 2.0)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: scale the actual range to 8 bits instead of clipping to white
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(array.astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # transparent areas become white, as a viewer would show them on a page
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _prepare(image: Image.Image, max_side: int) -> Image.Image:
    """Upright, RGB and at most `max_side`; `image` itself is left as it was."""
    if image.width < 1 or image.height < 1:
        raise ImageError("the image has no pixels")
    return _shrink(_to_rgb(ImageOps.exif_transpose(image)), max_side)


def _decode(source, name: str, max_side: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size, much faster
            if bytes_to_reduce(image) > MAX_DECODED_BYTES:
                raise ImageError(f"{name} is too large to process ({image.width:,} x {image.height:,} pixels "
                                 f"of mode {image.mode} would take over {MAX_DECODED_BYTES // 2**20} MiB)")
            image.load()
            # Shrunk first, in the decoded mode: converting a full-size image copies every pixel at
            # 4-8 bytes. Animated and multi-page files stay on their first frame, where Image.open
            # leaves them (asking for n_frames would walk every page of a TIFF).
            return _prepare(_shrink(image, max_side), max_side)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large to process (over {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image format we can read") from None
    except Exception as error:  # each decoder fails its own way (OSError, RuntimeError, IndexError, TypeError, ...)
        raise ImageError(f"{name} could not be decoded ({type(error).__name__}: {error}); is it truncated "
                         "or damaged?") from None


def load_image(source, max_side: int = 1024) -> Image.Image:
    """Open `source` as an upright RGB image no larger than `max_side` on its longer side."""
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or array.size == 0:
            raise ImageError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        return _prepare(Image.fromarray(array), max_side)
    if isinstance(source, Image.Image):
        return _prepare(source, max_side)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("the uploaded file is empty")
        return _decode(io.BytesIO(source), "the uploaded data", max_side)
    path = Path(source)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"the image file is empty: {path}")
    return _decode(path, str(source), max_side)


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """A `size` x `size` uint8 RGB array (the backbone's own preprocessing is applied in the graph)."""
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)

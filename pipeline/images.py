"""Turning any user image (path, bytes, PIL image or array) into an RGB PIL image."""
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 80_000_000  # refuse decompression bombs well before they exhaust memory
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """The input is not an image we can caption (not an image, truncated, too large, ...)."""


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
        image = Image.fromarray(array)
    elif isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageError("the uploaded file is empty")
            name, source = "the uploaded data", io.BytesIO(source)
        else:
            name = str(source)
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"image file not found: {path}")
            if path.stat().st_size == 0:
                raise ImageError(f"the image file is empty: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(source)
                image.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size, much faster
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name} is too large to process (over {MAX_PIXELS:,} pixels)") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image format we can read") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"{name} could not be decoded ({error}); is it truncated?") from None
    if image.width < 1 or image.height < 1:
        raise ImageError("the image has no pixels")
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated GIF/WebP: caption the first frame
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """A `size` x `size` uint8 RGB array (the backbone's own preprocessing is applied in the graph)."""
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)

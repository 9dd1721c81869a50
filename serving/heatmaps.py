"""Where the model looked: a caption's attention maps (pipeline.captioner.Caption.looked) over the
photo, for the page (the photo in a spotlight, a word at a time) and the /where_it_looked endpoint."""
import numpy as np
from PIL import Image

from pipeline.images import load_image

# The photo is shown this large at most: masks of the photo's own size would be 12 words x 12 MP
# of float32 for a phone photo, and the attention grid has 10 x 10 cells anyway
SHOWN_SIDE = 384
NO_ATTENTION = ("This model reads the photo as a whole, not region by region, so it cannot show where it "
                "looked for each word.")


def shown_photo(photo: bytes) -> np.ndarray:
    """The photo as the page shows it under the heat maps: upright, at most SHOWN_SIDE on its longer side."""
    return np.asarray(load_image(photo, SHOWN_SIDE))


def heat_map(weights: np.ndarray, height: int, width: int) -> np.ndarray:
    """One word's attention weights (grid rows x columns) spread over a height x width photo, 0 to 1
    (1 where it looked most). The encoder saw the whole photo squeezed to a square, so the grid
    stretches over the photo as it is."""
    grid = Image.fromarray(np.asarray(weights, np.float32), mode="F")
    spread = np.asarray(grid.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    spread = np.clip(spread, 0, None)
    return spread / spread.max() if spread.max() > 0 else spread


def spotlight(photo: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The photo dimmed except where the model looked for one word (its weights, grid rows x
    columns): full brightness at the heaviest region, a quarter where it did not look at all. A
    word looked for everywhere leaves the whole photo bright."""
    light = heat_map(weights, *photo.shape[:2])
    return (photo * (0.25 + 0.75 * light)[..., None]).astype(np.uint8)


def word_choices(caption) -> list[str]:
    """The word selector's choices: each word with its place ("3. dog"; a caption may repeat a word)."""
    return [f"{i}. {word}" for i, word in enumerate(caption.text.split(), 1)]


def as_json(caption) -> dict:
    """/where_it_looked's answer: the caption, its words, and each word's weights (grid rows x
    columns, summing to 1)."""
    return {"caption": caption.text, "words": caption.text.split(),
            "weights": [np.round(weights, 5).tolist() for weights in caption.looked]}

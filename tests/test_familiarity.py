"""Familiarity: calibrated on dev features, low for features unlike the training ones; in the app's model."""
import numpy as np
import pytest

from pipeline.familiarity import UNFAMILIAR_BELOW, Familiarity
from conftest import ROOT

WEIGHTS = ROOT / "weights"


def clusters(rng, n, centers, spread=0.1):
    """Positive features around a few directions, as Xception's pooled (ReLU) features are."""
    return np.abs(centers[rng.integers(0, len(centers), n)] + rng.normal(scale=spread, size=(n, centers.shape[1])))


def test_dev_photos_spread_evenly_and_photos_unlike_training_score_low(tmp_path):
    rng = np.random.default_rng(0)
    centers = np.abs(rng.normal(size=(5, 32)))
    familiarity = Familiarity.fit(clusters(rng, 600, centers), clusters(rng, 400, centers), centroids=16)
    in_domain = familiarity(clusters(rng, 2000, centers))
    assert 0.35 < in_domain.mean() < 0.65  # like dev photos: spread over [0, 1]
    assert np.mean(in_domain < UNFAMILIAR_BELOW) < 0.06
    unlike = familiarity(np.abs(rng.normal(size=(50, 32))))  # other directions altogether
    assert unlike.max() == 0.0
    assert ((0 <= in_domain) & (in_domain <= 1)).all()

    familiarity.save(tmp_path / "familiarity.npz")
    loaded, probe = Familiarity.load(tmp_path / "familiarity.npz"), clusters(rng, 200, centers)
    np.testing.assert_allclose(loaded(probe), familiarity(probe), atol=0.01)  # centroids kept as float16


def test_familiarity_is_the_share_of_dev_photos_at_least_as_far():
    familiarity = Familiarity(np.eye(2), dev_distances=np.array([0.0, 0.2, 0.3, 0.4]))  # one dev photo on a centroid
    # distances 0 (on a centroid), 1 - cos(45 degrees) = 0.29 (two dev photos are farther), and 1.71
    features = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(familiarity(features), [1.0, 0.5, 0.0])


@pytest.mark.skipif(not (WEIGHTS / "familiarity.npz").is_file(), reason="weights/ has no familiarity calibration")
def test_the_embedded_model_knows_flickr8k_photos_and_not_synthetic_ones():
    from PIL import Image

    from pipeline import Captioner

    captioner = Captioner.from_pretrained(WEIGHTS)
    examples = sorted((ROOT / "examples").glob("*.jpg"))
    described = [captioner.describe(path) for path in examples]
    assert all(d.familiarity is not None and not d.unfamiliar for d in described)
    rng = np.random.default_rng(0)
    synthetic = [rng.integers(0, 256, (299, 299, 3), dtype=np.uint8),  # noise
                 np.full((299, 299, 3), (200, 30, 30), np.uint8),  # a flat colour
                 np.array(Image.linear_gradient("L").convert("RGB").resize((299, 299)))]  # a gradient
    for image in synthetic:
        description = captioner.describe(image)
        assert description.unfamiliar and description.familiarity < UNFAMILIAR_BELOW
        assert description.caption == description.n_best[0].text

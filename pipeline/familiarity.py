"""How familiar a photo is: how close its features are to those of the training photos.

The training features are summarised by k-means centroids of their directions (cosine distance
suits Xception's pooled features, which differ in scale more than in kind); a photo's distance
is to its nearest centroid. The distance means little by itself, so it is calibrated on the dev
photos: `familiarity` is the share of dev photos at least as far from the training photos, so
dev photos are spread evenly over [0, 1] and one below UNFAMILIAR_BELOW is farther than all but
that share of them. Stored in the model folder as NumPy arrays, no pickle (pipeline/artifact.py).
"""
from pathlib import Path

import numpy as np

UNFAMILIAR_BELOW = 0.03  # at most about 3% of photos like Flickr8k's are called unfamiliar
CENTROIDS = 256
KMEANS_ITERATIONS = 25


def _directions(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def nearest_centroid_distances(centroids: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Cosine distance of each feature row to the nearest of `centroids` (unit rows)."""
    return 1.0 - np.max(_directions(features) @ centroids.T, axis=1)


class Familiarity:
    def __init__(self, centroids: np.ndarray, dev_distances: np.ndarray):
        self.centroids = _directions(centroids)
        self.dev_distances = np.sort(np.asarray(dev_distances, np.float64))
        if self.dev_distances.ndim != 1 or not len(self.dev_distances):
            raise ValueError("the calibration needs the distances of some dev photos")

    @classmethod
    def fit(cls, train_features: np.ndarray, dev_features: np.ndarray, centroids: int = CENTROIDS,
            seed: int = 0) -> "Familiarity":
        """Spherical k-means over the training features, calibrated on the dev features."""
        directions = _directions(train_features)
        rng = np.random.default_rng(seed)
        centers = directions[rng.choice(len(directions), min(centroids, len(directions)), replace=False)]
        for _ in range(KMEANS_ITERATIONS):
            nearest = np.argmax(directions @ centers.T, axis=1)
            sums = np.zeros_like(centers)
            np.add.at(sums, nearest, directions)
            empty = ~sums.any(axis=1)  # a centroid nobody chose keeps its place
            centers = np.where(empty[:, None], centers, _directions(sums))
        return cls(centers, nearest_centroid_distances(centers, dev_features))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Familiarity of each row in [0, 1]: the share of dev photos at least as far away."""
        distances = nearest_centroid_distances(self.centroids, features)
        farther = len(self.dev_distances) - np.searchsorted(self.dev_distances, distances, "left")
        return farther / len(self.dev_distances)

    def save(self, path: str | Path) -> dict:
        """Write the calibration to `path` (.npz), atomically; returns the entry for config.json's `familiarity`."""
        from .files import atomic_path

        with atomic_path(Path(path)) as tmp:
            np.savez(tmp, centroids=self.centroids.astype(np.float16), dev_distances=self.dev_distances)
        return {"unfamiliar_below": UNFAMILIAR_BELOW, "centroids": len(self.centroids),
                "dev_images": len(self.dev_distances)}

    @classmethod
    def load(cls, path: str | Path) -> "Familiarity":
        with np.load(Path(path), allow_pickle=False) as arrays:
            return cls(arrays["centroids"], arrays["dev_distances"])

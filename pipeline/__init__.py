"""Flickr8k image captioning: Xception features and a merge LSTM decoder."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides real messages
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# NumPy's OpenBLAS threads spin a while after each product: beside TensorFlow's own threads on a small
# CPU that slowed the next Xception pass by a third (bench.py). The decoder's products are small, one
# thread is enough. Takes effect only where NumPy is imported after this package.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["ArtifactError", "Caption", "Captioner"]


def __getattr__(name):
    # TensorFlow loads only when a model is needed, so `--help` and data tools start at once
    if name in __all__:
        from . import captioner
        return getattr(captioner, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")

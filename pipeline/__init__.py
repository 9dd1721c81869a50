"""Flickr8k image captioning: Xception features and a merge LSTM decoder."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides real messages
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = ["ArtifactError", "Caption", "Captioner"]


def __getattr__(name):
    # TensorFlow loads only when a model is needed, so `--help` and data tools start at once
    if name in __all__:
        from . import captioner
        return getattr(captioner, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")

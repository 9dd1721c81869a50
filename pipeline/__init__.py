"""Flickr8k image captioning: Xception features and a merge LSTM decoder."""
import os

# TensorFlow reads these when it loads, which in serving is never (the exported encoder needs no
# TensorFlow). Every pipeline module runs this file first; a TensorFlow imported before any of
# them only logs more. NumPy's thread count is set by the Captioner itself (threadpoolctl).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides real messages
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .artifact import ArtifactError  # noqa: E402
from .captioner import Caption, Captioner  # noqa: E402

__all__ = ["ArtifactError", "Caption", "Captioner"]

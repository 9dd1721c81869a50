"""bench.py's measurements, one module per family; bench.py is their command line.

Light on purpose: the app's start-up is timed in a fresh `python -m benchmarks.serving` process,
so nothing here may import more than the standard library before the app does.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: requirements files, app.py, the processes' cwd

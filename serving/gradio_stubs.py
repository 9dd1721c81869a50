"""Gradio imported without rewriting its type stubs.

Gradio 6 writes a `.pyi` type stub beside each of its ~80 component classes every time it is
imported (gradio/component_meta.py, `create_or_modify_pyi`): it re-reads and `ast`-parses each
component's source and rewrites the stub in site-packages. Stubs serve editors and type checkers,
not a running app, yet they cost 1.1 s of the 2.4 s `import gradio` on 2 AMD EPYC Zen 4 cores, a
third of the app's start-up (README, "Serving without TensorFlow"). `skip_stub_generation()`,
called before Gradio's first import, makes that step a no-op; Gradio otherwise runs unchanged.
"""
import importlib.abc
import importlib.machinery
import logging
import sys

log = logging.getLogger(__name__)

STUB_MODULE, STUB_WRITER = "gradio.component_meta", "create_or_modify_pyi"


def no_stub(*args, **kwargs) -> None:
    """Stands in for Gradio's stub writer: no stub is read or written."""


class _SkipStubsOnLoad(importlib.abc.MetaPathFinder):
    """Finds Gradio's component_meta as usual, and replaces its stub writer once it has run."""

    def find_spec(self, name, path, target=None):
        if name != STUB_MODULE:
            return None
        sys.meta_path.remove(self)  # once only: a later import of it is Gradio's business
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenSkipStubs(spec.loader)
        return spec


class _ThenSkipStubs:
    """A module loader that runs the module, then swaps its stub writer for `no_stub`: the
    component classes, defined after it, call the writer through the module's globals."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # create_module, get_source, ...: the loader's own
        return getattr(self._loader, name)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if hasattr(module, STUB_WRITER):
            setattr(module, STUB_WRITER, no_stub)
        else:  # a Gradio that no longer writes stubs this way: nothing to skip
            log.debug("%s has no %s: Gradio's import is left as it is", STUB_MODULE, STUB_WRITER)


def skip_stub_generation() -> bool:
    """Make the coming `import gradio` skip its stub writing. False (and nothing done) when Gradio
    is already imported, or when this was already arranged."""
    if STUB_MODULE in sys.modules or any(isinstance(f, _SkipStubsOnLoad) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _SkipStubsOnLoad())
    return True

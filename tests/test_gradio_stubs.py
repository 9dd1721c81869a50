"""Gradio imported without its type-stub writing (serving/gradio_stubs.py), each in a fresh process."""
import subprocess
import sys

import pytest

from conftest import ROOT

# Counts the sources Gradio's component_meta parses while Gradio is imported (it parses each
# component's source to write its stub), then checks that the components still work.
COUNT_STUB_PARSES = """
import ast, sys
parses, parse = [], ast.parse
def counting_parse(*args, **kwargs):
    if sys._getframe(1).f_globals.get("__name__") == "gradio.component_meta":
        parses.append(1)
    return parse(*args, **kwargs)
ast.parse = counting_parse
{before}
import gradio as gr
assert callable(gr.Button.click) and gr.Textbox(value="a").value == "a"
with gr.Blocks() as demo:
    gr.Button("b").click(lambda: None)
print(len(parses))
"""


def printed_by(code: str) -> list[str]:
    """The words `code` prints, run in a fresh Python process from the repo root."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


@pytest.mark.parametrize("before, skipped", [
    ("", False),  # Gradio as it is: if it stops parsing its sources, the skip has nothing left to do
    ("from serving.gradio_stubs import skip_stub_generation; assert skip_stub_generation()", True),
    ("import app", True),  # the app arranges it before its own import of Gradio
])
def test_gradio_skips_its_stubs_only_when_told(before, skipped):
    parses = int(printed_by(COUNT_STUB_PARSES.format(before=before))[-1])
    assert (parses == 0) if skipped else (parses > 50)


def test_too_late_or_twice_changes_nothing():
    code = """
import sys
from serving.gradio_stubs import skip_stub_generation, _SkipStubsOnLoad
finders = lambda: sum(isinstance(f, _SkipStubsOnLoad) for f in sys.meta_path)
print(skip_stub_generation(), skip_stub_generation(), finders())
import gradio.component_meta as m
print(finders(), m.create_or_modify_pyi.__name__)
"""
    assert printed_by(code) == ["True", "False", "1", "0", "no_stub"]
    assert printed_by("import gradio\nfrom serving.gradio_stubs import skip_stub_generation\n"
                      "print(skip_stub_generation())") == ["False"]

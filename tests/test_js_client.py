"""The README's JavaScript example (tests/js/describe.mjs): @gradio/client from npm, under Node, against the app."""
import json
import shutil
import subprocess

import pytest
from gradio_client import Client, handle_file

import app
from conftest import ROOT

JS = ROOT / "tests" / "js"
pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
    pytest.mark.skipif(not (JS / "node_modules" / "@gradio" / "client").is_dir(),
                       reason="@gradio/client is not installed: npm ci --prefix tests/js (.ci/run does it)"),
]


def test_the_javascript_client_gets_the_caption_and_the_familiarity(app_url):
    photo = sorted(app.EXAMPLES.glob("*.jpg"))[0]
    done = subprocess.run(["node", str(JS / "describe.mjs"), app_url, str(photo)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    expected = Client(app_url, verbose=False).predict(handle_file(str(photo)), 3, api_name="/describe")
    assert answer == {"describe": expected, "caption": expected["caption"]}

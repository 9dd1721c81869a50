"""Serving a Gradio page: its uploads counted and swept, the request limits in front of its routes,
Gradio's web component at /gradio.js, and the operator's opt-ins (run history) read from the environment.
"""
import logging
import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import FileResponse
from starlette.routing import Route

from .request_limits import RequestLimits
from .uploads import MAX_UPLOAD_BYTES, CountedUploads

# Gradio's web component (<gradio-app>), served at /gradio.js by the app itself: the pip package's
# own copy, which loads its hashed bundle from /assets/, as the app's page does
WEB_COMPONENT = Path(gr.__file__).parent / "templates" / "frontend" / "gradio.js"


def count_uploads(demo: gr.Blocks, uploads: CountedUploads) -> None:
    """Make `uploads` the page's record of uploaded files. Gradio's sweep iterates the same object,
    so it goes on seeing every upload; it takes the uploads' set last, whose end removes the
    folders the sweep has emptied (serving/uploads.py)."""
    demo.temp_file_sets[:] = [files for files in demo.temp_file_sets if files is not demo.upload_file_set] + [uploads]
    demo.upload_file_set = uploads


def launch(demo: gr.Blocks, host: str | None, port: int | None, *, max_request_bytes: int, max_file_references: int,
           max_upload_request_bytes: int, **launch_options):
    """Start the server; `host`/`port` None leave the choice to Gradio's variables and defaults.
    A request over the limits is refused before it reaches Gradio (serving/request_limits.py)."""
    # run history would keep photos in the browser (or a connected bucket): the operator opts in
    run_history = os.environ.get("GRADIO_RUN_HISTORY", "false").lower() == "true"
    # httpx (Gradio's HTTP client) logs every URL it requests at INFO
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    limits = Middleware(RequestLimits, max_body_bytes=max_request_bytes, max_file_references=max_file_references,
                        max_upload_bytes=max_upload_request_bytes, on_refused=demo.upload_file_set.refused)
    web_component = Route("/gradio.js", lambda request: FileResponse(WEB_COMPONENT, media_type="text/javascript"))
    return demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, run_history=run_history,
                       app_kwargs={"middleware": [limits], "routes": [web_component]}, **launch_options)

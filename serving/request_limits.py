"""What one request may carry, bounded before Gradio reads it: an ASGI middleware.

Gradio parses a request's whole body, then checks every file reference in it, on its event loop,
before any handler runs: a 6.7 MB body of 50,000 references to one upload stalled every client's
page for 19 s, and 400,000 held the server for two minutes and a gigabyte. So the body of each
POST is bounded in bytes as it arrives (a declared Content-Length over the bound is refused
before a byte is read) and, where it is JSON, in the file references it holds. A refusal is
immediate and says what the limit is.

A request that joined no queue (refused here, or by Gradio's queue as full) never reaches a
handler, so the handler never deletes its uploads: `on_refused` gets the paths it named, at once.
"""
import json
from collections.abc import Callable, Iterator

# Gradio's responses when a request is turned away before it runs: its queue is full or stopped
# (503), a bad body or function (400), a validator's refusal (422)
REFUSED_BEFORE_RUNNING = frozenset({400, 422, 503})


class RequestTooLarge(ValueError):
    """The request carries more than the limits allow; the message says what they are."""


def file_paths(value) -> Iterator[str]:
    """The `path` of every file reference (an object with a string "path", as Gradio's FileData)
    in a parsed JSON body, walked without recursion."""
    todo = [value]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            if isinstance(value.get("path"), str):
                yield value["path"]
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)


class RequestLimits:
    """ASGI middleware bounding each POST body: `max_body_bytes`, and at most `max_file_references`
    file references in a JSON body. Paths ending in one of `upload_paths` (multipart file uploads,
    which Gradio streams to disk and bounds per file) may take `max_upload_bytes` instead, and are
    passed through unread."""

    def __init__(self, app, *, max_body_bytes: int, max_file_references: int, max_upload_bytes: int,
                 upload_paths: tuple[str, ...] = ("/upload",), on_refused: Callable[[list[str]], None] | None = None):
        self.app, self.max_body_bytes, self.max_file_references = app, max_body_bytes, max_file_references
        self.max_upload_bytes, self.upload_paths, self.on_refused = max_upload_bytes, upload_paths, on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        is_upload = scope["path"].rstrip("/").endswith(self.upload_paths)
        limit = self.max_upload_bytes if is_upload else self.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await refuse(send, f"This request is larger than the {limit // 1024:,} KB the app accepts.")
        if is_upload:
            return await self.app(scope, receive, send)
        try:
            body = await read_body(receive, limit)
            paths = self.check(body, scope["headers"])
        except RequestTooLarge as error:
            return await refuse(send, str(error))
        except ConnectionError:  # the client went away mid-body
            return
        await self.app(scope, replay(body, receive), self.watch_refusal(send, paths))

    def check(self, body: bytes, headers) -> list[str]:
        """The file references of a JSON body (none for another kind), refused over the limit."""
        if b"json" not in dict(headers).get(b"content-type", b"application/json"):
            return []
        try:
            paths = list(file_paths(json.loads(body)))
        except RecursionError:  # nested deeper than the parser goes: no Gradio payload is
            raise RequestTooLarge("This request is nested too deeply to be a request of this app.") from None
        except ValueError:  # not JSON after all: Gradio answers it as it would
            return []
        if len(paths) > self.max_file_references:
            raise RequestTooLarge(f"This request names {len(paths):,} files; the app takes at most "
                                  f"{self.max_file_references} at a time.")
        return paths

    def watch_refusal(self, send, paths: list[str]):
        """`send`, telling on_refused of `paths` when Gradio turns the request away before it runs."""
        if not paths or self.on_refused is None:
            return send

        async def watched(message):
            if message["type"] == "http.response.start" and message["status"] in REFUSED_BEFORE_RUNNING:
                self.on_refused(paths)
            await send(message)
        return watched


async def read_body(receive, limit: int) -> bytes:
    """The request's body, refused as soon as it passes `limit` bytes (a body sent without its length)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"This request is larger than the {limit // 1024:,} KB the app accepts.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive):
    """An ASGI `receive` that gives `body` once, then passes on to the real one (disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again():
        return pending.pop() if pending else await receive()
    return receive_again


async def refuse(send, message: str) -> None:
    """413 with the message as Gradio's own refusals carry theirs ({"detail": ...})."""
    body = json.dumps({"detail": message, "error": message}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

"""Load tests of the app in its own process, on 127.0.0.1 with a temporary folder of its own.

  python load_test.py oversize       # 400,000 file references in one request: refused at once?
  python load_test.py costly-batch   # 32 of the costliest allowed photos in one batch, and a photo meanwhile
  python load_test.py soak --minutes 10 --clients 50   # mixed load: photos, bad files, links, batches
  python load_test.py burst --clients 200                # at once: 3 good photos for each bad file

Each prints its figures and, with --json, writes them. The app is started as `python app.py
--model MODEL` (default weights/, its exported encoder) and stopped by its own PID. Memory figures
are the app process's: VmHWM (peak resident) and VmRSS (in use), from /proc.
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
LINK = "http://127.0.0.1:9/holiday.jpg"  # never fetched: the app refuses links


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(width: int, height: int, bit_depth: int = 1, color_type: int = 0, note: bytes = b"") -> bytes:
    """A valid black PNG written row by row: a huge one costs little memory and is small on disk.

    color_type 0 is gray, 2 RGB, 4 gray and alpha, 6 RGBA (bit_depth 8 or 16 for those three);
    `note` goes in a text chunk (files that differ in it decode alike).
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte and packed pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    text = png_chunk(b"tEXt", b"Comment\0" + note) if note else b""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + text + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


def costliest_photo(index: int = 0) -> bytes:
    """31 megapixels of RGBA: 250 MB to decode and reduce, just under the app's 256 MiB limit."""
    return png_of_zeros(5600, 5600, 8, 6, note=str(index).encode())


def memory_mb(pid: int) -> dict[str, float]:
    """The process's peak (VmHWM) and current (VmRSS) resident memory, in MB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return {"peak_mb": int(fields["VmHWM"].split()[0]) / 1024, "in_use_mb": int(fields["VmRSS"].split()[0]) / 1024}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """`python app.py --model MODEL` in its own process on a free port of 127.0.0.1, its uploads in
    `temp_dir`; stopped by its own PID."""

    def __init__(self, model: str | Path, temp_dir: Path, env: dict | None = None, start_timeout: float = 300):
        self.port, self.uploads = free_port(), Path(temp_dir) / "uploads"
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.uploads), **(env or {})}
        env.pop("CAPTION_MODEL_REPO", None)
        self.log = open(Path(temp_dir) / "app.log", "w+")
        self.process = subprocess.Popen([sys.executable, "app.py", "--model", str(model), "--port", str(self.port)],
                                        cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + start_timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(self.url, timeout=5)
                return
            except httpx.TransportError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the app did not start:\n{self.output()[-3000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def memory(self) -> dict[str, float]:
        return memory_mb(self.process.pid)

    def leftovers(self) -> dict[str, list[str]]:
        """What the app's temporary folder holds besides Gradio's copies of the examples and the
        batch tab's CSV files (which it keeps for ten minutes): uploads, and empty folders."""
        examples = {path.name for path in EXAMPLES}
        files = [p for p in self.uploads.rglob("*") if p.is_file() and p.name not in examples
                 and p.name != "captions.csv"]
        folders = [p for p in self.uploads.rglob("*") if p.is_dir() and not any(p.iterdir())]
        return {"uploads": sorted(map(str, files)), "empty_folders": sorted(map(str, folders))}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def client(url: str):
    """A gradio_client Client that waits for a busy server as a browser would (httpx's default gives
    up after 5 s: in a burst of 200, uploads wait their turn longer than that)."""
    from gradio_client import Client
    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})


def timed(function, *args) -> tuple[float, object]:
    """(seconds, result or the exception raised) of one call."""
    started = time.monotonic()
    try:
        result = function(*args)
    except Exception as error:  # a refusal is a result here
        result = error
    return time.monotonic() - started, result


def oversize(app: AppProcess, references: int = 400_000) -> dict:
    """One request of `references` file references (as a hostile client sends it, with and without
    its length declared), a second client's /config meanwhile, and the memory it cost."""
    path = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("one.jpg", EXAMPLES[0].read_bytes())}).json()[0]
    body = json.dumps({"data": [[{"path": path, "meta": {"_type": "gradio.FileData"}}] * references, 3]}).encode()
    before = app.memory()
    report = {"references": references, "body_mb": round(len(body) / 2**20, 1), "memory_before": before}
    for declared in (True, False):
        config_seconds = []

        def fetch_config():
            config_seconds.append(timed(lambda: httpx.get(f"{app.url}config", timeout=30).raise_for_status())[0])

        other = threading.Thread(target=fetch_config)
        content = body if declared else (body[i:i + 65536] for i in range(0, len(body), 65536))
        started = time.monotonic()
        other.start()
        seconds, answer = timed(lambda: httpx.post(f"{app.url}gradio_api/call/caption_batch", content=content,
                                                   headers={"content-type": "application/json"}, timeout=300))
        other.join()
        key = "with_length" if declared else "chunked"
        report[key] = {"refused_after_s": round(seconds, 3),
                       "status": answer.status_code if isinstance(answer, httpx.Response) else type(answer).__name__,
                       "detail": answer.json().get("detail") if isinstance(answer, httpx.Response) else str(answer),
                       "second_client_config_s": round(config_seconds[0], 3),
                       "wall_s": round(time.monotonic() - started, 3)}
    after = app.memory()
    report.update(memory_after=after, peak_rise_mb=round(after["peak_mb"] - before["peak_mb"], 1))
    return report


def costly_batch(app: AppProcess, photos: int = 32, folder: Path | None = None) -> dict:
    """`photos` of the costliest allowed photos in one batch request, and one example photo sent
    while it runs: the app's peak memory, and how long that photo waited."""
    from gradio_client import handle_file

    folder = Path(folder or tempfile.mkdtemp())
    paths = []
    for i in range(photos):
        paths.append(folder / f"costly-{i}.png")
        paths[-1].write_bytes(costliest_photo(i))
    before = app.memory()
    batch = client(app.url).submit([handle_file(str(p)) for p in paths], 3, api_name="/caption_batch")
    while batch.status().code.name not in ("PROCESSING", "FINISHED"):
        time.sleep(0.1)
    time.sleep(2)  # well into the batch
    single, answer = timed(lambda: client(app.url).predict(handle_file(str(EXAMPLES[0])), 3, api_name="/caption"))
    batch_seconds, table = timed(lambda: batch.result(timeout=600))
    rows = table[0]["data"] if isinstance(table, tuple) else []
    return {"photos": photos, "photo_mb_decoded": 250, "memory_before": before, "memory_after": app.memory(),
            "single_photo_s": round(single, 2), "single_photo_caption": answer[0] if isinstance(answer, tuple) else str(answer),
            "batch_rows_captioned": sum(1 for row in rows if row[1]), "batch_rest_s": round(batch_seconds, 1)}


def soak_client(url: str, until: float, seed: int, bad: list[str], counts: dict, lock: threading.Lock) -> None:
    """One client's loop until `until`: a good photo, a bad file, a link or a small batch, at random."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    rng, session = random.Random(seed), client(url)
    while time.monotonic() < until:
        kind = rng.choice(["photo", "photo", "bad", "link", "batch"])
        try:
            if kind == "batch":
                files = [handle_file(str(rng.choice(EXAMPLES))) for _ in range(4)] + [handle_file(rng.choice(bad))]
                session.predict(files, 3, api_name="/caption_batch")
            else:
                photo = {"photo": lambda: str(rng.choice(EXAMPLES)), "bad": lambda: rng.choice(bad),
                         "link": lambda: LINK}[kind]()
                session.predict(handle_file(photo), 3, api_name="/caption")
            outcome = "answered"
        except AppError:
            outcome = "answered"  # the app's message: a bad file, a link
        except QueueError:
            outcome = "queue full"
        except Exception as error:
            outcome = f"failed: {type(error).__name__}"
        with lock:
            counts[f"{kind} {outcome}"] = counts.get(f"{kind} {outcome}", 0) + 1


def soak(app: AppProcess, minutes: float = 10, clients: int = 50, folder: Path | None = None) -> dict:
    """`clients` clients of mixed load for `minutes`: memory in use after the first minute (or the
    first tenth, for a short soak) and at the end, and what is left once the app is idle."""
    folder = Path(folder or tempfile.mkdtemp())
    bad = bad_files(folder)
    counts, lock = {}, threading.Lock()
    started = time.monotonic()
    until = started + minutes * 60
    first_mark = started + min(60, minutes * 6)
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(soak_client, app.url, until, seed, bad, counts, lock) for seed in range(clients)]
        time.sleep(max(0.0, first_mark - time.monotonic()))
        after_first = app.memory()
        for future in futures:
            future.result()
    at_end = app.memory()
    idle_since = time.monotonic()
    # once idle, the folders emptied by the sweep (each minute) go with the next one
    deadline = idle_since + 150
    while time.monotonic() < deadline and any(app.leftovers().values()):
        time.sleep(5)
    return {"minutes": minutes, "clients": clients, "requests": counts, "memory_after_first": after_first,
            "memory_at_end": at_end,
            "in_use_change": round(at_end["in_use_mb"] / after_first["in_use_mb"] - 1, 3),
            "left_once_idle": app.leftovers(), "idle_wait_s": round(time.monotonic() - idle_since)}


def bad_files(folder: Path) -> list[str]:
    """Files the app must refuse with its message: not an image, empty, truncated, a decompression bomb."""
    paths = []
    for name, data in {"notes.jpg": b"%PDF-1.4 not pixels\n", "empty.jpg": b"",
                       "truncated.jpg": EXAMPLES[0].read_bytes()[:4000], "bomb.png": png_of_zeros(9220, 9220)}.items():
        (folder / name).write_bytes(data)
        paths.append(str(folder / name))
    return paths


def one_photo(url: str, photo: str) -> tuple[str, float, str]:
    """(what came back: caption, error or queue full; seconds; the text) for one client's one photo,
    over Gradio's HTTP API as any client speaks it (upload, call, read the result's event stream):
    200 gradio_client Clients in this process took most of the 2 cores the server needed."""
    started = time.monotonic()
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            path = http.post("gradio_api/upload", files={"files": (Path(photo).name, Path(photo).read_bytes())}).json()[0]
            joined = http.post("gradio_api/call/caption",
                               json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, 3]})
            if joined.status_code == 503:
                return "queue full", time.monotonic() - started, joined.json().get("detail", "")
            answer = http.get(f"gradio_api/call/caption/{joined.json()['event_id']}").text
    except httpx.HTTPError as error:
        return f"failed: {type(error).__name__}", time.monotonic() - started, str(error)
    event, _, data = answer.strip().rpartition("event: ")[2].partition("\ndata: ")
    kind = "caption" if event == "complete" else "error"
    text = json.loads(data)[0] if kind == "caption" else (json.loads(data) or {}).get("error", "") if data.startswith("{") \
        else data
    return kind, time.monotonic() - started, text


def burst(app: AppProcess, clients: int = 200, folder: Path | None = None) -> dict:
    """`clients` clients at once, three good photos for each bad file: what each got, the latency
    from its request to its answer, and the app's peak memory."""
    folder = Path(folder or tempfile.mkdtemp())
    bad = bad_files(folder)
    photos = [str(EXAMPLES[i % len(EXAMPLES)]) if i % 4 else bad[(i // 4) % len(bad)] for i in range(clients)]
    barrier = threading.Barrier(clients)

    def at_once(photo):
        barrier.wait()
        return one_photo(app.url, photo)

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(at_once, photos))
    latencies = sorted(seconds for _, seconds, _ in answers)
    good = [kind for photo, (kind, _, _) in zip(photos, answers) if photo not in bad]
    refused = [kind for photo, (kind, _, _) in zip(photos, answers) if photo in bad]
    admitted = [seconds for kind, seconds, _ in answers if kind != "queue full"]
    return {"clients": clients, "good_photos": len(good), "bad_files": len(refused),
            "good_captioned": good.count("caption"), "good_queue_full": good.count("queue full"),
            "bad_refused_clearly": sum(
                1 for photo, (kind, _, text) in zip(photos, answers)
                if photo in bad and kind == "error" and text.startswith("Cannot caption this file")),
            "bad_queue_full": refused.count("queue full"),
            "queue_full": sum(kind == "queue full" for kind, _, _ in answers),
            "failed": sorted({kind for kind, _, _ in answers if kind.startswith("failed")}),
            "latency_s": {"p50": round(latencies[len(latencies) // 2], 2),
                          "p95": round(latencies[int(len(latencies) * 0.95)], 2), "max": round(latencies[-1], 2)},
            "longest_admitted_s": round(max(admitted), 2) if admitted else None,
            "wall_s": round(time.monotonic() - started, 1), "memory": app.memory()}


SCENARIOS = {"oversize": oversize, "costly-batch": costly_batch, "soak": soak, "burst": burst}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--model", default=str(ROOT / "weights"), help="the app's --model (default weights/)")
    p.add_argument("--minutes", type=float, default=10, help="soak: how long (default 10)")
    p.add_argument("--clients", type=int, default=50, help="soak and burst: clients at once (default 50)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp, AppProcess(args.model, Path(tmp)) as app:
        options = {"soak": {"minutes": args.minutes, "clients": args.clients},
                   "burst": {"clients": args.clients}}.get(args.scenario, {})
        from benchmarks.report import cpu_model
        report = {"scenario": args.scenario, "cpu": cpu_model(), **SCENARIOS[args.scenario](app, **options)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

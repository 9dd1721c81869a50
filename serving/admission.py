"""Admitting requests by the wait they would have, not by a fixed count.

Gradio's queue turns a request away once a fixed number wait. At about 60 ms a photo that bound
is a few seconds of waiting: a burst of 50 clients found the queue full for 24 of them, good
photos the app would have answered within 4 more seconds. Here a request joins while the wait it
would have stays under `max_wait_s`: those ahead of it in its concurrency group, each costing what
that group's handler has been measured to take (ServiceTimes). Beyond that it is refused at once,
with a message that says to retry.

The handlers' own time is the measure, not Gradio's per-event time, which includes each event's
wait for a worker thread behind a burst's uploads: with it, 174 of a burst of 200 were refused.
"""
import contextlib
import logging
import threading
import time
from collections import deque

from gradio import route_utils

log = logging.getLogger(__name__)
RECENT = 50  # handler times kept per concurrency group


class ServiceTimes:
    """What one request of each concurrency group costs in its handler: the lower quartile of its
    last RECENT measured times, the warm-up pass (`first_guess_s`) counting as the first.

    The lower quartile, not the mean: a burst's uploads arrive together and slow the first
    requests' handlers several times over (200 at once: 0.5 s against 0.08 s), while every
    admission is decided then; the wait those requests really had (12.5 s at most) followed the
    uncontended cost, and a mean refused 70 of them as if they would wait 31 s.
    """

    def __init__(self, first_guess_s: float):
        self.first_guess_s, self._seconds, self._lock = first_guess_s, {}, threading.Lock()

    @contextlib.contextmanager
    def measure(self, group: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self._seconds.setdefault(group, deque([self.first_guess_s], maxlen=RECENT)).append(
                    time.perf_counter() - started)

    def __getitem__(self, group: str) -> float:
        with self._lock:
            recent = sorted(self._seconds.get(group, [self.first_guess_s]))
        return recent[len(recent) // 4]


def busy_message(wait_s: float, max_wait_s: float) -> str:
    return (f"The app is busy: your photo would wait about {wait_s:.0f} s, longer than the {max_wait_s:.0f} s it "
            "lets anyone wait. Please try again in a minute.")


def expected_wait(queue, fn, times: ServiceTimes) -> float:
    """Seconds a request of `fn` joining `queue` now would wait: those waiting and running in its
    concurrency group, each taking the group's measured time, shared by its concurrency limit."""
    group = queue.event_queue_per_concurrency_id.get(fn.concurrency_id)
    if group is None:
        return 0.0
    ahead = len(group.queue) + group.current_concurrency
    return ahead * times[fn.concurrency_id] / max(group.concurrency_limit or 1, 1)


def admit_by_wait(demo, max_wait_s: float, times: ServiceTimes) -> None:
    """Make `demo`'s queue refuse, at once, a request whose expected wait passes `max_wait_s`."""
    queue = demo._queue
    push = queue.push

    async def push_if_the_wait_is_short(body, request, username):
        if body.fn_index is not None:
            wait = expected_wait(queue, route_utils.get_fn(queue.blocks, None, body), times)
            if wait > max_wait_s:
                log.info("refused a request: its wait would be %.1f s", wait)
                return False, busy_message(wait, max_wait_s), "queue_full"
        return await push(body, request, username)

    queue.push = push_if_the_wait_is_short

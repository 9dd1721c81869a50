"""Admitting requests by the wait they would have, not by a fixed count.

Gradio's queue turns a request away once a fixed number wait. At about 60 ms a photo that bound
is a few seconds of waiting: a burst of 50 clients found the queue full for 24 of them, good
photos the app would have answered within 4 more seconds. Here a request joins while the wait it
would have, from the measured time each of its function's requests takes, stays under
`max_wait_s`; beyond that it is refused at once, with a message that says to retry.
"""
import logging

from gradio import route_utils

log = logging.getLogger(__name__)


def busy_message(wait_s: float, max_wait_s: float) -> str:
    return (f"The app is busy: your photo would wait about {wait_s:.0f} s, longer than the {max_wait_s:.0f} s it "
            "lets anyone wait. Please try again in a minute.")


def expected_wait(queue, fn, first_guess_s: float) -> float:
    """Seconds a request of `fn` joining `queue` now would wait: those waiting and running in its
    concurrency group, each taking what the group's requests have taken on average (Gradio's own
    measure; `first_guess_s` until it has one), shared by the group's concurrency limit."""
    group = queue.event_queue_per_concurrency_id.get(fn.concurrency_id)
    if group is None:
        return 0.0
    measured = queue.process_time_per_fn.get(fn)
    seconds = measured.avg_time if measured is not None and measured.count else first_guess_s
    return (len(group.queue) + group.current_concurrency) * seconds / max(group.concurrency_limit or 1, 1)


def admit_by_wait(demo, max_wait_s: float, first_guess_s: float) -> None:
    """Make `demo`'s queue refuse, at once, a request whose expected wait passes `max_wait_s`."""
    queue = demo._queue
    push = queue.push

    async def push_if_the_wait_is_short(body, request, username):
        if body.fn_index is not None:
            wait = expected_wait(queue, route_utils.get_fn(queue.blocks, None, body), first_guess_s)
            if wait > max_wait_s:
                log.info("refused a request: its wait would be %.1f s", wait)
                return False, busy_message(wait, max_wait_s), "queue_full"
        return await push(body, request, username)

    queue.push = push_if_the_wait_is_short

"""The one way every benchmark times its work: seconds per item, and their percentiles in ms."""
import time


def timed(fn, items) -> list[float]:
    """The seconds `fn(item)` takes for each of `items`, in turn."""
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - start)
    return out


def once(fn) -> float:
    """The seconds one call of `fn()` takes."""
    return timed(lambda _: fn(), [None])[0]


def rate(step, per_call: int, seconds: float) -> float:
    """Items per second of `step`, which handles `per_call` items, called over and over for `seconds`
    (after one warm-up call)."""
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += per_call
    return done / (time.perf_counter() - start)


def percentile_ms(seconds: list[float], q: float, digits: int | None = 2) -> float:
    """The q-th percentile of `seconds`, in milliseconds, rounded to `digits` (None: not rounded)."""
    import numpy as np
    value = float(np.percentile(seconds, q)) * 1000
    return value if digits is None else round(value, digits)


def p50_ms(seconds: list[float]) -> float:
    return percentile_ms(seconds, 50)


def summary(seconds: list[float], prefix: str) -> dict:
    """{prefix}_p50_ms and {prefix}_p90_ms of `seconds`."""
    return {f"{prefix}_p{q}_ms": percentile_ms(seconds, q) for q in (50, 90)}


def cycle(items: list, n: int) -> list:
    """`n` of `items`, starting again from the first when they run out."""
    return [items[i % len(items)] for i in range(n)]

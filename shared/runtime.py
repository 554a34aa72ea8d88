"""Process-level set-up shared by both services."""

import asyncio
import contextlib
import gc

# The collector's first generation runs every 700 allocations by default: under load that is
# every few calls, each time walking the objects of every call in flight. Every 50,000 it costs
# the proxy about 11 µs less CPU a call (docs/BENCHMARKS.md); the calls' objects are freed by
# reference counting long before, so memory does not grow.
GC_THRESHOLDS = (50_000, 20, 100)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on every platform; the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def spare_the_collector() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into another error (redis-py can)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

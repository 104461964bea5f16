"""Background scrub: re-hash the cache's blobs over time; quarantine any whose bytes changed.

Answers never re-hash a stored blob (that is what makes hits cheap), so bit rot
would go unnoticed until ``hostkit cache verify``. The daemon walks every blob
in turn instead, paced to ``rate`` bytes per second (0 turns it off): each
round hands :meth:`hostkit.cache.Cache.scrub` a budget of ``rate * ROUND_SECONDS``
bytes in a worker thread (never on the event loop), then sleeps out the rest of
the round. A blob that fails is moved to ``quarantine/`` and its entries are
dropped, so the next resolve downloads it again.
"""

from __future__ import annotations

import asyncio
import time

from . import logs

#: Default pace, bytes per second: a background trickle next to any disk's bandwidth.
DEFAULT_RATE = 20 << 20
#: Seconds per round (budget = rate * ROUND_SECONDS).
ROUND_SECONDS = 5.0


async def scrub_forever(cache, rate: int, on_problem) -> None:
    """Re-hash blobs at ``rate`` bytes/s until cancelled; ``on_problem(blob, reason)`` each."""
    budget = max(1, int(rate * ROUND_SECONDS))
    while True:
        started = time.monotonic()
        try:
            problems = await asyncio.to_thread(cache.scrub, budget)
        except Exception as exc:  # a busy or vanished index: try again next round
            logs.event("scrub_error", message=repr(exc)[:300])
            problems = []
        for blob, reason in problems:
            on_problem(blob, reason)
        await asyncio.sleep(max(0.05, ROUND_SECONDS - (time.monotonic() - started)))

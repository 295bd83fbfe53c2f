"""One backoff for every retry that waits: doubling delays, capped, jittered."""

from __future__ import annotations

import random


class Backoff:
    """Delays from *first* doubling up to *longest*, each shortened by a random
    fraction of up to *jitter* (so that a batch of retries spreads out).

    Not thread-safe: its owner guards it (the pool, under its lock).
    """

    __slots__ = ("delay", "first", "jitter", "longest", "until")

    def __init__(self, first: float, longest: float, *, jitter: float = 0.0) -> None:
        self.first = first
        self.longest = longest
        self.jitter = jitter
        #: The last delay before jitter; 0 after a success.
        self.delay = 0.0
        #: When the next attempt is due (monotonic seconds); 0 after a success.
        self.until = 0.0

    def next_delay(self) -> float:
        """The next delay: *first* after a success, else twice the last one,
        at most *longest*."""
        self.delay = min(self.longest, self.delay * 2 or self.first)
        if self.jitter:
            return self.delay * (1 - random.uniform(0, self.jitter))  # noqa: S311
        return self.delay

    def failed(self, now: float) -> float:
        """An attempt failed at *now*: the time the next one is due."""
        self.until = now + self.next_delay()
        return self.until

    def succeeded(self) -> None:
        """An attempt succeeded: the next failure waits *first* again."""
        self.delay = 0.0
        self.until = 0.0

    def waiting(self, now: float) -> bool:
        """True while the next attempt is not due."""
        return now < self.until

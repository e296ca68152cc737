"""Counting and rate-limited logging of skipped samples."""

from __future__ import annotations

import logging
import time
from collections import Counter

logger = logging.getLogger(__name__)


class SkipCounter:
    """A webdataset error handler that counts skipped samples by exception type and keeps going.

    At most one log line per ``log_interval_s`` seconds, so a corrupt shard cannot flood the log.
    """

    def __init__(self, name: str, log_interval_s: float = 10.0):
        self.name = name
        self.log_interval_s = log_interval_s
        self.counts: Counter = Counter()
        self._last_log = float("-inf")

    def handler(self, error: Exception) -> bool:
        self.counts[type(error).__name__] += 1
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            logger.warning("%s: skipped a sample (%r); skips so far: %s", self.name, error, dict(self.counts))
        return True

    @property
    def total(self) -> int:
        return sum(self.counts.values())

"""Skip reasons, and counting with rate-limited logging of what was skipped.

Every input that cannot become a training sample ends in exactly one named bucket. The download
stage uses these reasons for table rows, and the loader uses them for samples and shards:

- fetching: ``http_<status>``, ``timeout``, ``network_error``, ``too_many_redirects``,
  ``truncated`` (the body or the image data ended early), ``body_too_large``, ``missing_file``,
  ``read_error``, ``missing_url``, ``invalid_url``;
- decoding: ``empty_file``, ``not_an_image`` (HTML or text where an image was expected),
  ``decode_error``, ``unsupported_format``, ``too_large`` (more pixels than allowed), ``too_small``;
- captions: ``missing_caption``, ``empty_caption``;
- shards: ``missing_image`` and ``missing_caption`` (a key without its ``jpg`` or ``txt`` member),
  ``duplicate_key``, ``dotted_key``, ``shard_read_error``, ``short_shard``, ``missing_shard``.

The loader also counts ``repeated_to_fill``: samples repeated so that an epoch cut short by skips
still has its full number of batches.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class SkipSample(Exception):
    """An input that cannot become a sample; ``reason`` is its bucket in the statistics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Counts skipped inputs by reason and logs them at most once per ``log_interval_s`` seconds.

    ``handler`` makes it a webdataset error handler: it counts the exception and keeps the stream
    going. A corrupt shard therefore cannot flood the log, and every skip is still counted.
    """

    def __init__(self, name: str, log_interval_s: float = 10.0):
        self.name = name
        self.log_interval_s = log_interval_s
        self.counts: Counter = Counter()
        self._unreported: Counter = Counter()
        self._last_log = float("-inf")

    def add(self, reason: str, detail: str = "", count: int = 1) -> None:
        self.counts[reason] += count
        self._unreported[reason] += count
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            logger.warning("%s: skipped %s (%s); skips so far: %s", self.name, reason, detail or "no detail",
                           dict(self.counts))

    def handler(self, error: Exception) -> bool:
        reason = error.reason if isinstance(error, SkipSample) else type(error).__name__
        self.add(reason, str(error))
        return True

    def merge(self, counts: Mapping[str, int]) -> None:
        """Add counts gathered elsewhere, for example in a data-loader worker process."""
        for reason, count in counts.items():
            if count:
                self.counts[reason] += count

    def take_unreported(self) -> dict[str, int]:
        """Return the counts added since the last call and reset them."""
        counts = dict(self._unreported)
        self._unreported.clear()
        return counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

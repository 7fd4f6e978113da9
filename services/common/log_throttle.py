"""Repeats of a library's log line (aiokafka retrying a broker that is away: hundreds a second)
pass at most once per window, the next one saying how many were held back."""

import logging
import time
from collections.abc import Callable

_MAX_KEYS = 1000


class RepeatThrottle(logging.Filter):
    """On a handler: records of loggers under `prefixes`, by (logger, message template)."""

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes, self._every_s, self._clock = prefixes, every_s, clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (passed at, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key, now = (record.name, str(record.msg)), self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= _MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1] and isinstance(record.msg, str):
            held = f" [{last[1]} more like this in the last {now - last[0]:.0f} s]"
            record.msg += held.replace("%", "%%") if record.args else held
        return True

"""RepeatThrottle: a library's repeated log line passes once per window, then says how many."""

import logging

from services.common.log_throttle import RepeatThrottle


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args or None, None)


def test_a_repeated_line_passes_once_per_window_then_counts_what_it_held() -> None:
    clock = _Clock()
    throttle = RepeatThrottle(every_s=10, clock=clock)
    passed = [
        throttle.filter(_record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused"))
        for _ in range(600)
    ]
    assert passed.count(True) == 1 and passed[0]
    clock.now = 10.5
    record = _record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert throttle.filter(record)
    assert record.getMessage() == (
        "Unable connect to node with id 1: refused [599 more like this in the last 10 s]"
    )


def test_different_lines_and_other_loggers_are_not_held() -> None:
    throttle = RepeatThrottle(every_s=10, clock=_Clock())
    assert throttle.filter(_record("aiokafka", "one"))
    assert throttle.filter(_record("aiokafka.consumer.fetcher", "one"))  # another logger
    assert throttle.filter(_record("aiokafka", "two"))
    assert all(throttle.filter(_record("gateway", "request_published")) for _ in range(5))

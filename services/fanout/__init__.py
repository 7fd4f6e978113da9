"""The fan-out hub: reads a node's reply partitions and hands events to each request's watchers."""

from services.fanout.hub import Hub, Subscription
from services.fanout.reader import ReplyReader

__all__ = ["Hub", "ReplyReader", "Subscription"]

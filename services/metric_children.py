"""Label children of Prometheus metrics, remembered: `labels()` validates, joins and locks on
every call, and a request would pay it once per metric it touches."""
from __future__ import annotations

from typing import Any

# The services' label sets are bounded (their metrics modules say by what); this caps the cache
# should an operator's key or credential list be larger than anyone expects.
MAX_CHILDREN = 100_000


class LabelChildren:
    def __init__(self, limit: int = MAX_CHILDREN) -> None:
        self._limit = limit
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def __call__(self, metric: Any, *values: str) -> Any:
        """metric.labels(*values), from the cache after the first time."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= self._limit:
                self._children.clear()
            child = self._children[key] = metric.labels(*values)
        return child

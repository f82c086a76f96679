"""What the current log lines are about: task, event, document, batch (contextvars).

The code that learns an identifier binds it; :class:`ContextFilter`
(``ingest.logging_setup``) copies the bound fields onto every record logged meanwhile::

    with bound(event_id=42):
        ...                      # every line carries event_id=42
        bind(document_id="abc")  # from here until the ``with`` block ends

    @binds(event_id="event_id")  # the argument ``event_id`` for the call
    def process_event(event_id: int) -> ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

FIELDS = ("task_id", "task_name", "event_id", "document_id", "batch_id", "correction_id",
          "delivery_id")
"""The context fields a log line may carry, in the order the text format shows them."""

_fields: ContextVar[Mapping[str, Any]] = ContextVar("kb_log_fields",
                                                   default=MappingProxyType({}))


def current() -> Mapping[str, Any]:
    """The fields bound now (read-only: bindings replace the mapping, never change it)."""
    return _fields.get()


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (None values ignored) for the block; earlier bindings come back after."""
    token = _fields.set({**_fields.get(), **_present(fields)})
    try:
        yield
    finally:
        _fields.reset(token)


def bind(**fields: Any) -> None:
    """Bind ``fields`` until the enclosing :func:`bound` block (or :func:`clear`) ends."""
    _fields.set({**_fields.get(), **_present(fields)})


def binds(**fields: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: bind each log field to the call's argument of the given name."""
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            call = signature.bind_partial(*args, **kwargs).arguments
            with bound(**{field: call.get(arg) for field, arg in fields.items()}):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


def clear() -> None:
    """Forget every binding (a task ended: the next one starts clean)."""
    _fields.set(MappingProxyType({}))


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    return {k: str(v) if not isinstance(v, int | str) else v
            for k, v in fields.items() if v is not None}

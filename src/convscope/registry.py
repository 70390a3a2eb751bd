"""A name -> constructor registry (the timm pattern), shared by models, tasks and data sets."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from convscope.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors; ``register`` is a decorator.

    >>> models = Registry("model")
    >>> @models.register("tiny")
    ... def tiny(num_classes: int = 10): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def wrap(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__.replace("_", "-")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._entries[key] = fn
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UserError(f"unknown {self.kind} {name!r}; expected one of: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

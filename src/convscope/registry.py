"""A name -> constructor registry (the timm pattern), shared by models, tasks and data sets."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

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

    def create(self, name: str, options: Mapping[str, Any] | None = None, /, **given: Any) -> T:
        """Construct ``name`` from a recipe's ``options`` and the ``given`` arguments (those the data decides).

        The one option check: an option the constructor does not take, or one of the ``given`` ones, is a
        UserError naming the options it accepts.
        """
        constructor = self.get(name)
        accepted = sorted(k for k in inspect.signature(constructor).parameters if k not in given)
        unknown = sorted(set(options or {}) - set(accepted))
        if unknown:
            known = ", ".join(accepted) or "none"
            raise UserError(f"{self.kind} {name!r} has no option {unknown[0]!r}; accepted: {known}")
        return constructor(**given, **(options or {}))

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

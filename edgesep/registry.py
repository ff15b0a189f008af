"""The one registry helper: named entries (block forms, artifact writers, device schemes), registered once,
looked up by name; an unknown name raises listing the known ones. Imports only ``errors`` (ground floor).

    WRITERS: Registry[ArtifactWriter] = Registry("artifact")
    WRITERS.add("tflite:int8", writer)        # ValueError when the name is taken
    WRITERS.get("tflite:int9")                # UsageError: unknown artifact 'tflite:int9'; known: ...
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from edgesep.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in registration order.

    Args:
        what: what an entry is, for messages (``block form``, ``artifact``, ``device scheme``).
        error: the exception type an unknown name raises (called with one message line).
    """

    def __init__(self, what: str, error: Callable[[str], Exception] = UsageError) -> None:
        self.what = what
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (once); returns it."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name raises ``error`` listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(f"unknown {self.what} {name!r}; known: {', '.join(self._entries)}") from None

    def pop(self, name: str) -> T:
        """Unregister ``name`` (a test or plugin removing what it added); returns its entry."""
        return self._entries.pop(name)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

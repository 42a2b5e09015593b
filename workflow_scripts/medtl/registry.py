"""Name -> object registries, the way timm registers models.

A dataset, an architecture or a strategy is added by decorating one function or
class with ``@REGISTRY.register("name")``; the workflow and config validation
only ever look names up here, so an unknown name fails with the list of known ones.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from medtl.settings import Settings

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


class DeclaredRegistry(Registry[T]):
    """A registry whose entries declare their settings: each must have a ``settings`` attribute that is a
    :class:`medtl.settings.Settings` (an empty one for an entry without settings). The config check, the
    defaults jobs use and the tables of docs/ all read that declaration, so an entry without one is refused
    when it is registered rather than accepted with settings nobody checks."""

    def register(self, name: str) -> Callable[[T], T]:
        add = super().register(name)

        def declared(obj: T) -> T:
            if not isinstance(getattr(obj, "settings", None), Settings):
                raise TypeError(f"{self.kind} '{name}' has no settings declaration: give it "
                                "settings=Settings(...) from medtl.settings (Settings() when it has none)")
            return add(obj)

        return declared

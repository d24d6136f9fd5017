"""Per-app state of features, under typed keys.

A feature declares its key once, next to its state's type, and finds its state (or another
feature's) through the app without a string or an ``Any``:

>>> class Flags: ...
>>> FLAGS: ExtensionKey[Flags] = ExtensionKey("flags")
>>> extensions = Extensions()
>>> extensions.get(FLAGS) is None
True
>>> flags = extensions.setdefault(FLAGS, Flags())
>>> extensions[FLAGS] is flags
True
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

T = TypeVar("T")


class ExtensionKey(Generic[T]):
    """The name of one feature's slot in ``app.extensions`` and the type of what it holds."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ExtensionKey({self.name!r})"


class Extensions:
    """``app.extensions``: feature state by :class:`ExtensionKey`."""

    def __init__(self) -> None:
        self._values: dict[str, object] = {}

    def get(self, key: ExtensionKey[T], default: T | None = None) -> T | None:
        """What ``key`` holds, else ``default``."""
        return cast(T, self._values[key.name]) if key.name in self._values else default

    def __getitem__(self, key: ExtensionKey[T]) -> T:
        try:
            return cast(T, self._values[key.name])
        except KeyError:
            raise KeyError(
                f"app.extensions holds no {key.name!r}: install that feature on the app first"
            ) from None

    def __setitem__(self, key: ExtensionKey[T], value: T) -> None:
        self._values[key.name] = value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, ExtensionKey) and key.name in self._values

    def setdefault(self, key: ExtensionKey[T], default: T) -> T:
        """What ``key`` holds, after storing ``default`` there if it held nothing."""
        return cast(T, self._values.setdefault(key.name, default))

    def pop(self, key: ExtensionKey[T]) -> T | None:
        """Remove and return what ``key`` holds (``None`` if nothing)."""
        return cast("T | None", self._values.pop(key.name, None))

    def names(self) -> list[str]:
        """The keys in use, by name (for diagnostics)."""
        return sorted(self._values)

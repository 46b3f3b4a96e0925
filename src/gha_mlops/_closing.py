"""Ports whose implementations hold something (connections, a daemon client, a token cache)
own ``close()`` and are context managers: :class:`Closing` says so once for all of them.

A port Protocol lists ``Closing`` among its bases. An adapter that names the port as a base
inherits ``__enter__``/``__exit__`` from here and must write ``close()`` (mypy refuses to
instantiate it otherwise); one that matches the port only structurally writes all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from types import TracebackType

_C = TypeVar("_C", bound="Closing")


class Closing(Protocol):
    """Something to close when done with it; ``with port:`` closes it on the way out."""

    def close(self) -> None:
        """Let go of what the object holds (connections, clients). Closing twice is harmless;
        an adapter may open new connections if used after ``close()``."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

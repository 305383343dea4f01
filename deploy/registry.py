"""Plug-ins (camera backends, policies, ...) chosen by a string parameter: one small registry type for all."""
from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

from deploy.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what  # e.g. "camera kind", used in error messages
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str):
        def decorate(factory):
            self._factories[name] = factory
            return factory
        return decorate

    def parameters(self, name: str) -> set[str]:
        """The keyword parameters plug-in `name` accepts (so a node passes each backend only its own)."""
        return set(inspect.signature(self._factory(name)).parameters)

    def _factory(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            raise ConfigError(f"unknown {self.what} '{name}' (choose {'|'.join(sorted(self._factories))})")
        return self._factories[name]

    def make(self, name: str, **params) -> T:
        """Build plug-in `name`; an unknown name or parameter is a ConfigError that names it."""
        factory = self._factory(name)
        try:
            return factory(**params)
        except TypeError as error:
            raise ConfigError(f"{self.what} '{name}': {error}") from None

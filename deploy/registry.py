"""Plug-ins (camera backends, policies, ...) chosen by a string parameter: one small registry type for all."""
from __future__ import annotations

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

    def make(self, name: str, **params) -> T:
        """Build plug-in `name`; an unknown name or parameter is a ConfigError that names it."""
        if name not in self._factories:
            raise ConfigError(f"unknown {self.what} '{name}' (choose {'|'.join(sorted(self._factories))})")
        try:
            return self._factories[name](**params)
        except TypeError as error:
            raise ConfigError(f"{self.what} '{name}': {error}") from None

"""Settings checks: a config group merged into its dataclass (names and types), whose `__post_init__` checks
ranges with `require`; every failure is a ConfigError naming the value and what would be valid."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

from core.errors import ConfigError

T = TypeVar("T")


def check_settings(schema: type[T], values: DictConfig | dict, prefix: str) -> T:
    """Merge config values into a dataclass, checking names and types; its `__post_init__` checks ranges.
    `prefix` is where the values sit in the config (`algo.`, `env.`, or empty for top-level settings)."""
    valid = ", ".join(f.name for f in dataclasses.fields(schema))  # type: ignore[arg-type]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
    except ConfigKeyError as err:
        raise ConfigError(f"unknown setting {prefix}{err.key} for {schema.__module__}; valid: {valid}") from None
    except ValidationError as err:
        raise ConfigError(f"bad value for {prefix}{err.full_key}: {str(err.msg).splitlines()[0]}") from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except MissingMandatoryValue as err:
        raise ConfigError(f"the setting {prefix}{err.full_key} is missing; valid settings: {valid}") from None


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_positive(hp: Any, *names: str) -> None:
    for name in names:
        value = getattr(hp, name)
        require(value > 0, f"algo.{name}={value} must be > 0")


def require_choice(hp: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(hp, name)
    require(value in choices, f"algo.{name}={value!r}; valid: {', '.join(choices)}")


def require_fraction(hp: Any, *names: str) -> None:
    for name in names:
        value = getattr(hp, name)
        require(0.0 <= value <= 1.0, f"algo.{name}={value} must lie in [0, 1]")

"""The algorithms `python -m algos algo=<name>` runs, and their hyperparameter defaults. Each default is written
once, in its algorithm file's `Hyperparameters` dataclass (beside the field's meaning); `store_algorithm_defaults`
puts those dataclasses' defaults into Hydra's ConfigStore as the config group `algo`, so the command line, tuned
sets (conf/tuned/) and sweeps override them as they would a YAML file's. They are stored as plain values, not
as structured configs, so that bad values reach the settings checks of core/checks.py and their messages."""

from __future__ import annotations

import dataclasses
import importlib

from hydra.core.config_store import ConfigStore

ALGORITHMS = ("pg", "a2c", "trpo", "ppo_penalty", "ppo_clip", "grpo", "rloo", "seqgan")


def hyperparameters(name: str) -> type:
    """The `Hyperparameters` dataclass of algos/<name>.py."""
    return importlib.import_module(f"algos.{name}").Hyperparameters


def store_algorithm_defaults() -> None:
    store = ConfigStore.instance()
    for name in ALGORITHMS:
        store.store(group="algo", name=name, node=dataclasses.asdict(hyperparameters(name)()))

"""Environments behind one call: `make_vector_env(env_cfg, num_envs, training)` builds a Gymnasium vector env
for the config group `env` (conf/env/*.yaml), choosing the builder by `env_cfg.kind`."""

import importlib

from omegaconf import DictConfig

from algos.common import ConfigError, check_settings

# env.kind -> the module with its Settings (schema) and make_vector_env; imported on first use, so a CartPole
# run never loads transformers
KINDS = {"classic": "envs.classic", "text": "envs.text.env", "atari": "envs.atari"}


def _kind(env_cfg: DictConfig):
    module = KINDS.get(env_cfg.get("kind"))
    if module is None:
        raise ConfigError(f"env.kind={env_cfg.get('kind')!r} is unknown; valid: {', '.join(KINDS)}")
    return importlib.import_module(module)


def check_env_settings(env_cfg: DictConfig) -> None:
    """Names, types and ranges of the `env` group, against its kind's schema."""
    check_settings(_kind(env_cfg).Settings, env_cfg, "env.")


def make_vector_env(env_cfg: DictConfig, num_envs: int, training: bool):
    return _kind(env_cfg).make_vector_env(env_cfg, num_envs, training)

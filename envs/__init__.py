"""Environments behind one call: `make_vector_env(env_cfg, num_envs, training)` builds a Gymnasium vector env
for the config group `env` (conf/env/*.yaml), choosing the builder by `env_cfg.kind`."""

from omegaconf import DictConfig

from algos.common import ConfigError
from envs import classic

BUILDERS = {"classic": classic.make_vector_env}


def make_vector_env(env_cfg: DictConfig, num_envs: int, training: bool):
    builder = BUILDERS.get(env_cfg.kind)
    if builder is None:
        raise ConfigError(f"env.kind={env_cfg.kind!r} is unknown; valid: {', '.join(BUILDERS)}")
    return builder(env_cfg, num_envs, training)

"""Environments behind one call: `make_vector_env(settings, num_envs, training, placement)` makes a Gymnasium vector env
for the config group `env` (conf/env/*.yaml), choosing the builder by `env.kind`; `make_video_env` one
evaluation episode recorded as MP4, and `make_sequence_task` whole-sequence data for algo=seqgan, where the kind
offers them. `check_env_settings` turns the config group into the kind's typed Settings, which the others take."""

import importlib
import importlib.util
from types import ModuleType

import gymnasium as gym
from omegaconf import DictConfig

from core.checks import check_settings
from core.devices import CPU, Placement
from core.errors import ConfigError
from core.info import EnvSettings, VectorEnvSettings

# env.kind -> the module with its Settings (schema) and builders; imported on first use, so a CartPole
# run never loads transformers
KINDS = {
    "classic": "envs.classic",
    "text": "envs.text.env",
    "atari": "envs.atari",
    "seqgan_oracle": "envs.seqgan_oracle",
}


def _kind(kind: str | None) -> ModuleType:
    module = KINDS.get(kind)  # type: ignore[arg-type]
    if module is None:
        raise ConfigError(f"env.kind={kind!r} is unknown; valid: {', '.join(KINDS)}")
    return importlib.import_module(module)


def _kinds_offering(builder: str) -> list[str]:
    return [kind for kind, name in KINDS.items() if hasattr(importlib.import_module(name), builder)]


def check_env_settings(env_cfg: DictConfig) -> EnvSettings:
    """Names, types and ranges of the `env` group, against its kind's schema; returns the kind's Settings."""
    return check_settings(_kind(env_cfg.get("kind")).Settings, env_cfg, "env.")


def vector_env_settings(settings: EnvSettings) -> VectorEnvSettings:
    """`settings`, where its kind has step-by-step environments; otherwise a clear error."""
    if not isinstance(settings, VectorEnvSettings):
        raise ConfigError(
            f"env.kind={settings.kind} is whole-sequence data for algo=seqgan; it has no step-by-step "
            f"environment. Use algo=seqgan, or an env of kind {' or '.join(_kinds_offering('make_vector_env'))}"
        )
    return settings


def make_vector_env(
    settings: EnvSettings, num_envs: int, training: bool, placement: Placement = CPU
) -> gym.vector.VectorEnv:
    """`placement`: where an env that runs models of its own (the text env: its reference and reward models) runs
    them, through its `place` method; the other kinds compute with numpy and ale-py on the CPU."""
    envs = _kind(settings.kind).make_vector_env(vector_env_settings(settings), num_envs, training)
    if hasattr(envs, "place"):
        envs.place(placement)
    return envs


def make_sequence_task(settings: EnvSettings):
    """Whole-sequence data and metrics (envs/sequences.py) for algo=seqgan, from kinds that offer them."""
    module = _kind(settings.kind)
    if not hasattr(module, "sequence_task"):
        raise ConfigError(
            f"env.kind={settings.kind} has no whole-sequence data for algo=seqgan; use an env of "
            f"kind {' or '.join(_kinds_offering('sequence_task'))} (env=seqgan_oracle, "
            f"env=text_sentiment)"
        )
    return module.sequence_task(settings)


def check_video_support(settings: EnvSettings) -> None:
    """capture_video=true needs a kind that renders frames and moviepy, which writes the MP4s."""
    if not hasattr(_kind(settings.kind), "make_video_env"):
        raise ConfigError(
            f"capture_video=true: env.kind={settings.kind} has no frames to record (kinds that do: "
            f"{', '.join(_kinds_offering('make_video_env'))}); set capture_video=false"
        )
    if importlib.util.find_spec("moviepy") is None:
        raise ConfigError(
            "capture_video=true needs moviepy to write MP4s: pip install -e '.[video]', or set capture_video=false"
        )


def make_video_env(settings: EnvSettings, video_folder: str) -> gym.vector.VectorEnv:
    """A one-environment vector env like make_vector_env's for evaluation, whose first episode is recorded."""
    return _kind(settings.kind).make_video_env(settings, video_folder)

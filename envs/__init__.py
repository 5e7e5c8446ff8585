"""Environments behind one call: `make_vector_env(env_cfg, num_envs, training)` builds a Gymnasium vector env
for the config group `env` (conf/env/*.yaml), choosing the builder by `env_cfg.kind`; `make_video_env` one
evaluation episode recorded as MP4, and `make_sequence_task` whole-sequence data for algo=seqgan, where the kind
offers them."""

import importlib
import importlib.util

from omegaconf import DictConfig

from algos.common import ConfigError, check_settings

# env.kind -> the module with its Settings (schema) and make_vector_env; imported on first use, so a CartPole
# run never loads transformers
KINDS = {"classic": "envs.classic", "text": "envs.text.env", "atari": "envs.atari",
         "seqgan_oracle": "envs.seqgan_oracle"}


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


def make_sequence_task(env_cfg: DictConfig):
    """Whole-sequence data and metrics (envs/sequences.py) for algo=seqgan, from kinds that offer them."""
    module = _kind(env_cfg)
    if not hasattr(module, "sequence_task"):
        offering = [kind for kind, name in KINDS.items() if hasattr(importlib.import_module(name), "sequence_task")]
        raise ConfigError(f"env.kind={env_cfg.kind} has no whole-sequence data for algo=seqgan; use an env of "
                          f"kind {' or '.join(offering)} (env=seqgan_oracle, env=text_sentiment)")
    return module.sequence_task(env_cfg)


def check_video_support(env_cfg: DictConfig) -> None:
    """capture_video=true needs a kind that renders frames and moviepy, which writes the MP4s."""
    if not hasattr(_kind(env_cfg), "make_video_env"):
        recording = [kind for kind, name in KINDS.items() if hasattr(importlib.import_module(name), "make_video_env")]
        raise ConfigError(f"capture_video=true: env.kind={env_cfg.kind} has no frames to record (kinds that do: "
                          f"{', '.join(recording)}); set capture_video=false")
    if importlib.util.find_spec("moviepy") is None:
        raise ConfigError("capture_video=true needs moviepy to write MP4s: pip install -e '.[video]', or set "
                          "capture_video=false")


def make_video_env(env_cfg: DictConfig, video_folder: str):
    """A one-environment vector env like make_vector_env's for evaluation, whose first episode is recorded."""
    return _kind(env_cfg).make_video_env(env_cfg, video_folder)

"""The settings of a run, checked into typed objects before any work starts: the top-level settings of
conf/config.yaml (`RunSettings`, with the networks' `NetSettings`), the env kind's settings and the algorithm's
hyperparameters. Code after the check reads these objects, never the raw config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

from omegaconf import DictConfig

from core.checks import check_settings, require
from core.info import EnvSettings
from envs import check_env_settings, check_video_support

ACTIVATIONS = ("tanh", "relu")
H = TypeVar("H")


@dataclass
class NetSettings:
    hidden_sizes: list[int]  # units per hidden layer of the MLP torsos
    activation: str  # tanh | relu
    normalize_obs: bool  # running mean/std of observations inside the agent

    def __post_init__(self):
        require(
            len(self.hidden_sizes) > 0 and min(self.hidden_sizes) > 0,
            f"net.hidden_sizes={self.hidden_sizes} must be a non-empty list of positive sizes, e.g. [64,64]",
        )
        require(self.activation in ACTIVATIONS, f"net.activation={self.activation!r}; valid: {', '.join(ACTIVATIONS)}")


@dataclass
class RunSettings:
    """The top-level settings of conf/config.yaml (`algo` and `env` are checked by their own schemas)."""

    seed: int
    total_timesteps: int  # environment steps of training, over all environments
    torch_threads: int
    eval_episodes: int  # final evaluation episodes, greedy policy
    run_root: str
    resume: str | None
    checkpoint_interval_s: float  # seconds between checkpoints
    kl_alarm: float  # warn when the measured KL exceeds this multiple of the algorithm's KL target
    capture_video: bool
    progress: bool  # a live bar in a terminal, a plain line every progress_interval_s elsewhere
    progress_interval_s: float
    net: NetSettings

    def __post_init__(self):
        for name in ("total_timesteps", "torch_threads", "eval_episodes"):
            require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be > 0")
        require(self.checkpoint_interval_s >= 0, f"checkpoint_interval_s={self.checkpoint_interval_s} must be >= 0")
        require(self.progress_interval_s >= 0, f"progress_interval_s={self.progress_interval_s} must be >= 0")
        require(self.kl_alarm > 1, f"kl_alarm={self.kl_alarm} must be > 1 (a multiple of the KL target)")


@dataclass
class Config(Generic[H]):
    """A whole job's checked settings; `raw` is the composed config as given, kept only to be saved."""

    run: RunSettings
    env: EnvSettings
    algo: H
    raw: DictConfig


def check_config(cfg: DictConfig, schema: type[H]) -> Config[H]:
    """The run's, the env's and the algorithm's settings checked, in that order (ConfigError naming the first bad
    one)."""
    run = check_settings(RunSettings, {f.name: cfg[f.name] for f in dataclasses.fields(RunSettings)}, "")
    env = check_env_settings(cfg.env)
    if run.capture_video:
        check_video_support(env)
    return Config(run, env, check_settings(schema, cfg.algo, "algo."), cfg)

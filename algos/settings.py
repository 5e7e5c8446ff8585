"""The settings of a run, checked into typed objects before any work starts: the top-level settings of
conf/config.yaml (`RunSettings`, with the networks' `NetSettings`), the env kind's settings and the algorithm's
hyperparameters. Code after the check reads these objects, never the raw config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

from omegaconf import DictConfig

from algos import distributed
from core.checks import check_settings, require
from core.devices import Placement, placement
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
    # conf/config.yaml sets both; these defaults read the config.yaml of a run saved before they existed
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (core/devices.py)
    precision: str = "fp32"  # fp32 | bf16

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
    placement: Placement  # the device and precision, resolved (a GPU per rank under torchrun)


def check_config(cfg: DictConfig, schema: type[H]) -> Config[H]:
    """The run's, the env's and the algorithm's settings checked, in that order (ConfigError naming the first bad
    one)."""
    fields = [f.name for f in dataclasses.fields(RunSettings)]
    run = check_settings(RunSettings, {name: cfg[name] for name in fields if name in cfg}, "")
    env = check_env_settings(cfg.env)
    if run.capture_video:
        check_video_support(env)
    where = placement(run.device, run.precision, distributed.local_rank(), distributed.local_world_size())
    return Config(run, env, check_settings(schema, cfg.algo, "algo."), cfg, where)

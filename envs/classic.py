"""Classic control (CartPole, Acrobot, MountainCar, Pendulum, ...), MuJoCo (HalfCheetah-v5, ...), or any Gymnasium id
with vector observations."""

import difflib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from core.errors import ConfigError
from core.info import VectorEnvSettings


@dataclass
class Settings(VectorEnvSettings):
    """kind "classic"; `id` is a registered Gymnasium id with vector observations."""


def check_env_id(env_id: str) -> None:
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else "see gymnasium.pprint_registry() for all ids"
        raise ConfigError(f"env.id={env_id!r} is not a registered Gymnasium environment; {hint}")


def make_single_env(env_id: str, video_folder: str | None = None) -> gym.Env:
    """With `video_folder`, the first episode is recorded as MP4 there."""
    render: dict[str, Any] = {"render_mode": "rgb_array"} if video_folder else {}
    try:
        env = gym.make(env_id, disable_env_checker=True, **render)
    except gym.error.DependencyNotInstalled as err:
        raise ConfigError(
            f"env.id={env_id!r} needs a package that is not installed ({err}); for the MuJoCo envs: "
            f"pip install -e '.[mujoco]'"
        ) from None
    if video_folder:
        env = gym.wrappers.RecordVideo(
            env, video_folder, episode_trigger=lambda episode: episode == 0, name_prefix="eval"
        )
    if isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.dtype == np.float64:
        env = as_float32(env)
    # RecordEpisodeStatistics sits inside any reward wrapper, so the logged return is the raw one.
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.ClipAction(env)  # the Gaussian's sample is stored unclipped; the env sees it clipped
    return env


def as_float32(env: gym.Env) -> gym.Env:
    """MuJoCo's float64 observation vectors in the networks' dtype (gymnasium's DtypeObservation would warn that the
    Box's bounds lose precision; they are +-inf)."""
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    bounds = space.low.astype(np.float32), space.high.astype(np.float32)
    return gym.wrappers.TransformObservation(
        env, lambda obs: obs.astype(np.float32), gym.spaces.Box(*bounds, dtype=np.float32)
    )


def make_vector_env(settings: Settings, num_envs: int, training: bool) -> gym.vector.VectorEnv:
    """Same-step autoreset: a finished episode's last observation arrives in info['final_obs'], which the
    rollout needs to bootstrap at a time limit. `training` makes no difference for classic control."""
    check_env_id(settings.id)
    return SyncVectorEnv(
        [lambda: make_single_env(settings.id) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )


def make_video_env(settings: Settings, video_folder: str) -> gym.vector.VectorEnv:
    check_env_id(settings.id)
    return SyncVectorEnv([lambda: make_single_env(settings.id, video_folder)], autoreset_mode=AutoresetMode.SAME_STEP)

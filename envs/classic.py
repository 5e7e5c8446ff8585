"""Classic control (CartPole, Acrobot, MountainCar, Pendulum, ...) or any Gymnasium id with vector observations."""

import difflib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
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
    env = gym.make(env_id, disable_env_checker=True, **render)
    if video_folder:
        env = gym.wrappers.RecordVideo(
            env, video_folder, episode_trigger=lambda episode: episode == 0, name_prefix="eval"
        )
    # RecordEpisodeStatistics sits inside any reward wrapper, so the logged return is the raw one.
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.ClipAction(env)  # the Gaussian's sample is stored unclipped; the env sees it clipped
    return env


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

"""Greedy evaluation of a trained agent: the undiscounted returns of whole episodes, and a recorded video."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from core.agent import AgentContract
from core.info import EnvSettings
from envs import make_vector_env, make_video_env


def evaluate_policy(agent: AgentContract, env: EnvSettings, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes under the greedy policy, one episode per environment."""
    return play_greedy(agent, make_vector_env(env, episodes, training=False), seed)


def record_video(agent: AgentContract, env: EnvSettings, folder: Path, seed: int) -> list[Path]:
    """One greedy evaluation episode, recorded as MP4 in `folder`; returns the video files."""
    play_greedy(agent, make_video_env(env, str(folder)), seed)
    return sorted(folder.glob("*.mp4"))


def play_greedy(agent: AgentContract, envs: gym.vector.VectorEnv, seed: int) -> np.ndarray:
    """One episode per environment under the greedy policy; their undiscounted returns. Closes `envs`."""
    obs, _ = envs.reset(seed=seed)
    episodes = envs.num_envs
    returns, done = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not done.all():
        obs, _, _, _, info = envs.step(agent.greedy_action(torch.as_tensor(obs)).numpy())
        final = info.get("final_info", {})
        if "episode" in final:
            first = final["_episode"] & ~done
            returns[first] = final["episode"]["r"][first]
            done |= first
    envs.close()
    return returns

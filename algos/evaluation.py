"""Evaluation of a trained agent: the undiscounted returns and lengths of whole episodes, greedy (the mode of the
policy) or sampled, and a recorded video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from core.agent import AgentContract
from core.devices import CPU, Placement
from core.info import EnvSettings
from envs import make_vector_env, make_video_env


@dataclass
class Episodes:
    returns: np.ndarray  # undiscounted, raw (RecordEpisodeStatistics sits innermost)
    lengths: np.ndarray


def evaluate_policy(
    agent: AgentContract, env: EnvSettings, episodes: int, seed: int, placement: Placement = CPU
) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes under the greedy policy, one episode per environment; an env
    that runs models runs them as `placement` says."""
    return play(agent, make_vector_env(env, episodes, training=False, placement=placement), seed).returns


def record_video(
    agent: AgentContract,
    env: EnvSettings,
    folder: Path,
    seed: int,
    placement: Placement = CPU,
    deterministic: bool = True,
) -> list[Path]:
    """One evaluation episode, recorded as MP4 in `folder`; returns the video files."""
    play(agent, make_video_env(env, str(folder)), seed, deterministic)
    return sorted(folder.glob("*.mp4"))


def play_greedy(agent: AgentContract, envs: gym.vector.VectorEnv, seed: int) -> np.ndarray:
    """The returns of `play` under the greedy policy."""
    return play(agent, envs, seed).returns


def play(agent: AgentContract, envs: gym.vector.VectorEnv, seed: int, deterministic: bool = True) -> Episodes:
    """One episode per environment, greedy (argmax, or the Gaussian mean) or sampled from the policy, on the agent's
    device. Closes `envs`."""
    device = next(iter(agent.parameters())).device
    obs, _ = envs.reset(seed=seed)
    episodes = envs.num_envs
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    done = np.zeros(episodes, dtype=bool)
    while not done.all():
        obs_t = torch.as_tensor(obs, device=device)
        action = agent.greedy_action(obs_t) if deterministic else agent.act(obs_t)[0]
        obs, _, _, _, info = envs.step(action.cpu().numpy())
        final = info.get("final_info", {})
        if "episode" in final:
            first = final["_episode"] & ~done
            returns[first] = final["episode"]["r"][first]
            lengths[first] = final["episode"]["l"][first]
            done |= first
    envs.close()
    return Episodes(returns, lengths)

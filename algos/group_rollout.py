"""Grouped rollouts for the group-relative algorithms (GRPO, RLOO; DESIGN.md section 11): whole episodes, in
groups of G that start from the same state.

A group is G sub-environments of the vector env reset with the same seed, through Gymnasium's own per-environment
seeds (`reset(seed=[s_1]*G + [s_2]*G + ...)`): equal seeds give classic control the same initial state, Atari the
same game after its no-ops, the text env the same prompt. The starts are checked at every reset, so an env that
ignores its seeds is refused with its name rather than trusted. Each sub-environment plays one episode; one whose
episode has ended waits (its later steps are neither trained on nor counted) until every episode of the batch has
ended or `max_episode_steps` is reached, which truncates the episodes still running.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from algos import distributed
from algos.rollout import EpisodeBookkeeping, KLController, to_device
from core import info as protocol
from core.agent import AgentContract
from core.devices import CPU
from core.errors import ConfigError


@dataclass
class EpisodeBatch:
    """Every step of a batch's episodes, flattened step-major (the steps of step t of every running episode, then
    step t + 1, ...); episode e is the one played by sub-environment e, and its group is e // group_size."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None  # log pi_ref(a_t|s_t), where the env reports it (core/info.py)
    episode: torch.Tensor  # (steps,) the episode each step belongs to
    returns: torch.Tensor  # (episodes,) undiscounted return, the env's KL penalty included where it has one
    lengths: torch.Tensor  # (episodes,) steps per episode
    group_size: int

    def __len__(self) -> int:
        return self.episode.shape[0]

    def minibatch_indices(self, num_minibatches: int) -> Iterator[torch.Tensor | slice]:
        """The steps of a fresh shuffle of whole episodes, cut into `num_minibatches` sets of episodes: each
        episode's steps stay together (the text agent then runs one forward pass per episode)."""
        if num_minibatches == 1:
            yield slice(None)
            return
        for episodes in torch.randperm(len(self.returns), device=self.returns.device).chunk(num_minibatches):
            yield torch.isin(self.episode, episodes).nonzero().squeeze(1)


class GroupRollout(EpisodeBookkeeping):
    """`num_envs / group_size` groups of `group_size` whole episodes per batch. Every batch starts with a reset, so a
    checkpoint between batches holds no episode in progress: the seed stream alone restores the environments. Rank r
    of a data-parallel job draws its groups' seeds from the seed's stream jumped r times (2^127 draws each), so no
    two ranks play the same group and rank 0 draws what a plain run draws."""

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        agent: AgentContract,
        group_size: int,
        max_episode_steps: int,
        seed: int,
        kl: KLController | None,
        env_name: str,
        device: torch.device = CPU.device,
    ):
        super().__init__(envs.num_envs, kl)
        self.envs, self.agent, self.group_size, self.max_steps = envs, agent, group_size, max_episode_steps
        self.num_groups, self.env_name, self.device = envs.num_envs // group_size, env_name, device
        self.seeds = np.random.Generator(np.random.PCG64(seed).jumped(distributed.rank()))  # a seed per group a batch
        self._obs_for_stats: torch.Tensor | None = None

    def collect(self) -> EpisodeBatch:
        n = self.envs.num_envs
        group_seeds = self.seeds.integers(2**31 - 1, size=self.num_groups)
        # Gymnasium's vector envs take one seed per sub-environment; the stub says int only
        obs, _ = self.envs.reset(seed=[int(s) for s in np.repeat(group_seeds, self.group_size)])  # type: ignore[arg-type]
        self._check_identical_starts(obs)
        self.agent.begin_rollout(self._obs_for_stats)
        protocol.begin_batch(self.envs)
        self.episode_kl[:] = 0.0
        running, returns = np.ones(n, dtype=bool), np.zeros(n)
        steps: list[tuple] = []  # per step: (running mask, obs, action, logprob, ref_logprob or None)
        next_obs, first_step = torch.as_tensor(obs, device=self.device), self.global_step
        for _ in range(self.max_steps):
            action, logprob, _ = self.agent.act(next_obs)
            obs, reward, terminated, truncated, info = self.envs.step(action.cpu().numpy())
            ends = (terminated | truncated) & running
            ref_logprob = info.get(protocol.REF_LOGPROB)
            if ref_logprob is not None:
                step_kl = np.where(running, logprob.cpu().numpy() - ref_logprob, 0.0)
                reward = reward - self._kl_penalty(step_kl, ends)
            returns += np.where(running, reward, 0.0)
            steps.append((running.copy(), next_obs, action, logprob, ref_logprob))
            self.global_step += int(running.sum())
            self._record_episodes(info, counted=running)
            running &= ~ends
            next_obs = torch.as_tensor(obs, device=self.device)
            if not running.any():
                break
        if distributed.world_size() > 1:  # the job's steps: episodes end at different times on each rank
            self.global_step = first_step + int(
                distributed.sum_over_ranks(torch.tensor(self.global_step - first_step, device="cpu"))
            )
        return self._batch(steps, returns)

    def _batch(self, steps: list[tuple], returns: np.ndarray) -> EpisodeBatch:
        device = self.device
        masks = torch.as_tensor(np.stack([s[0] for s in steps]), device=device)  # (T, n)
        obs = torch.cat([o[m] for m, (_, o, *_) in zip(masks, steps)])
        self._check_finite(returns, obs)
        self.batches_collected += 1
        self._update_kl_coef(int(distributed.sum_over_ranks(masks.sum())))
        self._obs_for_stats = obs
        has_ref = steps[0][4] is not None
        return EpisodeBatch(
            obs=obs,
            actions=torch.cat([a[m] for m, (_, _, a, _, _) in zip(masks, steps)]),
            logprobs=torch.cat([lp[m] for m, (_, _, _, lp, _) in zip(masks, steps)]),
            ref_logprobs=torch.cat(
                [torch.as_tensor(r, dtype=torch.float32, device=device)[m] for m, (*_, r) in zip(masks, steps)]
            )
            if has_ref
            else None,
            episode=masks.nonzero()[:, 1],
            returns=torch.as_tensor(returns, dtype=torch.float32, device=device),
            lengths=masks.sum(0),
            group_size=self.group_size,
        )

    def _check_identical_starts(self, obs: np.ndarray) -> None:
        grouped = np.asarray(obs).reshape(self.num_groups, self.group_size, -1)
        if not (grouped == grouped[:, :1]).all():
            raise ConfigError(
                f"{self.env_name} ignores per-environment seeds: {self.group_size} sub-environments "
                f"reset with one seed started from different states, so it cannot form the groups of "
                f"a group-relative algorithm; use an env whose reset(seed=...) decides its start"
            )

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "batches_collected": self.batches_collected,
            "seeds": self.seeds.bit_generator.state,
            "obs_for_stats": self._obs_for_stats,
            "kl_beta": self.kl.beta if self.kl is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step, self.batches_collected = state["global_step"], state["batches_collected"]
        self.seeds.bit_generator.state = state["seeds"]
        self._obs_for_stats = to_device(state["obs_for_stats"], self.device)
        if self.kl is not None:
            self.kl.beta = state["kl_beta"]


def sequence_sums(per_step: torch.Tensor, episode: torch.Tensor, num_episodes: int) -> torch.Tensor:
    """sum_t of a per-step quantity within each episode: (episodes,)."""
    return torch.zeros(num_episodes, dtype=per_step.dtype, device=per_step.device).index_add_(0, episode, per_step)


def group_statistics(returns: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of each episode's group, one value per episode (episodes e and e' share a group when
    e // group_size == e' // group_size). The std is the sample std (n - 1), as GRPO's reference code has it."""
    grouped = returns.view(-1, group_size)
    return (grouped.mean(1).repeat_interleave(group_size), grouped.std(1).repeat_interleave(group_size))

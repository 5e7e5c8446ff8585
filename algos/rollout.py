"""Fixed-length rollouts from a vector env into a flat batch, with GAE, reward scaling and the KL penalty of
envs that report a reference policy (core/info.py: the env-to-rollout info protocol)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from algos import distributed
from algos.networks import RunningMeanStd
from core import info as protocol
from core.agent import AgentContract
from core.devices import CPU
from core.errors import NonFiniteError
from envs.snapshot import restore_vector_env_state, vector_env_state


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    episode_ends: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16), arrays shaped (T, num_envs).

    delta_t = r_t + gamma * V(s_{t+1}) * (1 - end_t) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - end_t) * A_{t+1}
    `end_t` marks the last step of an episode. A time-limit truncation is an end too: the rollout has
    already added gamma * V(final observation) to its reward, so it is bootstrapped, while a termination is not.
    With lam = 1, A_t + V(s_t) is the discounted reward-to-go.
    """
    advantages = torch.zeros_like(rewards)
    next_advantage, next_value = torch.zeros_like(last_value), last_value
    for t in reversed(range(rewards.shape[0])):
        not_end = 1.0 - episode_ends[t]
        delta = rewards[t] + gamma * next_value * not_end - values[t]
        next_advantage = delta + gamma * lam * not_end * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages


@dataclass
class Batch:
    """One rollout flattened to (num_steps * num_envs, ...) samples, step-major: sample t * num_envs + n is
    step t of environment n."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    num_envs: int

    def __len__(self) -> int:
        return self.advantages.shape[0]

    def minibatch_indices(self, num_minibatches: int, by: str = "sample") -> Iterator[torch.Tensor | slice]:
        """A fresh shuffle of the whole batch, cut into equal minibatches (Huang et al. 2022, detail 6).
        by="env" shuffles whole environments instead (all their steps together, as recurrent PPO does), which
        keeps each episode's per-token samples in one minibatch: the text agent then runs one forward pass per
        episode. A single minibatch is the whole batch, whose mean gradient no order changes: no shuffle."""
        device = self.advantages.device
        if num_minibatches == 1:
            yield slice(None)
        elif by == "env":
            steps = torch.arange(len(self) // self.num_envs, device=device)[:, None] * self.num_envs
            for envs in torch.randperm(self.num_envs, device=device).chunk(num_minibatches):
                yield (steps + envs[None, :]).reshape(-1)
        else:
            yield from torch.randperm(len(self), device=device).chunk(num_minibatches)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (the reward normalisation of PPO's
    continuous-control code, as in gymnasium's NormalizeReward), kept here so checkpoints hold its state. Rewards
    are numpy arrays, so the statistics stay on the CPU (over every rank's environments, algos/distributed.py)."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma, self.stats = gamma, RunningMeanStd((), device=CPU.device)
        self.discounted = np.zeros(num_envs)

    def __call__(self, rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
        self.discounted = self.discounted * self.gamma + rewards
        self.stats.update(torch.from_numpy(self.discounted))
        self.discounted[episode_ends] = 0.0
        return rewards / np.sqrt(self.stats.var.item() + 1e-8)

    def state_dict(self) -> dict:
        return {"discounted": torch.from_numpy(self.discounted.copy()), "stats": self.stats.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discounted = state["discounted"].numpy().copy()
        self.stats.load_state_dict(state["stats"])


class KLController:
    """beta of the penalty -beta * (log pi(a|s) - log pi_ref(a|s)) per step: fixed, or adapted toward a
    per-sequence KL target (Ziegler et al. 2019, sec. 2.2: e = clip(KL / target - 1, -0.2, 0.2),
    beta <- beta * (1 + e * n_steps / horizon))."""

    def __init__(self, penalty: protocol.KLPenalty):
        self.beta, self.target, self.horizon = penalty.coef, penalty.target, penalty.horizon

    def update(self, sequence_kl: float, n_steps: int) -> None:
        if self.target is not None:
            error = float(np.clip(sequence_kl / self.target - 1, -0.2, 0.2))
            self.beta *= 1 + error * n_steps / self.horizon


SAMPLES_LOGGED = 8  # finished episodes' samples shown in TensorBoard at each logged update


class EpisodeBookkeeping:
    """What every rollout keeps about finished episodes for the run's log, and the KL penalty of envs that report a
    reference policy (core/info.py): per-episode returns, metrics and samples, and each episode's summed KL."""

    def __init__(self, num_envs: int, kl: KLController | None):
        self.kl = kl
        self.episode_kl = np.zeros(num_envs)  # running sum of log pi - log pi_ref in each episode
        self.episode_metrics: dict[str, list[float]] = {}  # per finished episode, under core.info's tags
        self.samples: list[str] = []  # the latest finished episodes' samples, for environments that give them
        self.finished_episodes: list[tuple[int, float, int]] = []  # (global step, return, length)
        self.global_step = 0
        self.batches_collected = 0
        self._batch_kl: list[float] = []

    def _kl_penalty(self, step_kl: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """beta * (log pi - log pi_ref) for this step (0 without a KL controller: the KL is then only measured);
        finished episodes' total KL goes to the metrics."""
        self.episode_kl += step_kl
        if episode_end.any():
            finished = self.episode_kl[episode_end].tolist()
            self._batch_kl += finished
            self.episode_metrics.setdefault(protocol.KL_TAG, []).extend(finished)
            self.episode_kl[episode_end] = 0.0
        return (self.kl.beta * step_kl if self.kl is not None else np.zeros_like(step_kl)).astype(np.float32)

    def _update_kl_coef(self, n_steps: int) -> None:
        mean_kl = self._batch_mean_kl()
        if self.kl is not None and mean_kl is not None:
            self.kl.update(mean_kl, n_steps)
        self._batch_kl = []

    def _batch_mean_kl(self) -> float | None:
        """The mean KL of the batch's finished episodes, over every rank's (so each rank moves beta alike)."""
        if distributed.world_size() == 1:
            return float(np.mean(self._batch_kl)) if self._batch_kl else None
        kl = torch.tensor([sum(self._batch_kl), len(self._batch_kl)], dtype=torch.float64, device="cpu")
        total, count = distributed.sum_over_ranks(kl).tolist()
        return total / count if count else None

    def _check_finite(self, rewards: np.ndarray, obs: torch.Tensor) -> None:
        """Every rank stops if any rank's environments returned a non-finite value (no rank waits for one gone)."""
        where = f"in update {self.batches_collected} (environment steps up to {self.global_step})"
        with distributed.stop_together(
            f"another rank's environment returned a non-finite reward or observation {where}"
        ):
            if not np.isfinite(rewards).all():
                bad = rewards[~np.isfinite(rewards)][0]
                raise NonFiniteError(f"the environment returned a non-finite reward ({bad}) {where}")
            if obs.is_floating_point() and not torch.isfinite(obs).all():
                raise NonFiniteError(f"the environment returned a non-finite observation {where}")

    def _record_episodes(self, info: dict, counted: np.ndarray | None = None) -> None:
        """Episode statistics from RecordEpisodeStatistics, which sits innermost (raw, unclipped return), and the
        metrics and samples of core.info's protocol; `counted` masks the environments whose episodes count."""
        final = info.get("final_info", {})
        if "episode" not in final:
            return
        ep = final["episode"]
        mask = final["_episode"] if counted is None else final["_episode"] & counted
        for i in np.flatnonzero(mask):
            self.finished_episodes.append((self.global_step, float(ep["r"][i]), int(ep["l"][i])))
        for tag, values in final.get(protocol.METRICS, {}).items():
            self.episode_metrics.setdefault(tag, []).extend(values[final["_" + protocol.METRICS] & mask].tolist())
        if protocol.SAMPLES in final:
            fresh = final[protocol.SAMPLES][final["_" + protocol.SAMPLES] & mask].tolist()
            self.samples = (self.samples + fresh)[-SAMPLES_LOGGED:]


class Rollout(EpisodeBookkeeping):
    """Fixed-length segments of `num_steps` from each of the vector env's environments (Huang et al. 2022,
    detail 1), with the bootstrap at time-limit truncation done right (SB3 #633, CleanRL #198).

    `bootstrap_truncated=False` is for environments whose limit is part of the task (the text env's response
    limit, where the final reward is paid): nothing follows a truncation there, so nothing is bootstrapped."""

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        agent: AgentContract,
        num_steps: int,
        gamma: float,
        seed: int,
        scale_rewards: bool = False,
        kl: KLController | None = None,
        bootstrap_truncated: bool = True,
        device: torch.device = CPU.device,
    ):
        super().__init__(envs.num_envs, kl)
        self.envs, self.agent, self.num_steps, self.gamma = envs, agent, num_steps, gamma
        self.device = device  # the agent's: observations go there, actions come back to the CPU
        self.bootstrap_truncated = bootstrap_truncated
        self.reward_scaler = RewardScaler(envs.num_envs, gamma) if scale_rewards else None
        obs, _ = envs.reset(seed=seed)
        envs.action_space.seed(seed)
        self.next_obs = torch.as_tensor(obs, device=device)
        self._obs_for_stats: torch.Tensor | None = None

    def collect(self, gae_lambda: float) -> Batch:
        agent, n, steps = self.agent, self.envs.num_envs, self.num_steps
        agent.begin_rollout(self._obs_for_stats)
        protocol.begin_batch(self.envs)
        obs, actions, logprobs, values = [], [], [], []
        rewards, ends = np.zeros((steps, n), dtype=np.float32), np.zeros((steps, n), dtype=np.float32)
        for t in range(steps):
            action, logprob, value = agent.act(self.next_obs)
            next_obs, reward, terminated, truncated, info = self.envs.step(action.cpu().numpy())
            ends[t] = terminated | truncated
            rewards[t] = self.reward_scaler(reward, ends[t] > 0) if self.reward_scaler is not None else reward
            if protocol.REF_LOGPROB in info:
                rewards[t] -= self._kl_penalty(logprob.cpu().numpy() - info[protocol.REF_LOGPROB], ends[t] > 0)
            self.global_step += n * distributed.world_size()  # the job's steps: every rank steps as many
            if "final_obs" in info:
                if self.bootstrap_truncated:
                    rewards[t] += self._truncation_bootstrap(truncated & ~terminated, info)
                self._record_episodes(info)
            obs.append(self.next_obs)
            actions.append(action)
            logprobs.append(logprob)
            values.append(value)
            self.next_obs = torch.as_tensor(next_obs, device=self.device)
        obs_t = torch.stack(obs)
        self._check_finite(rewards, obs_t)
        self.batches_collected += 1
        self._update_kl_coef(steps * n * distributed.world_size())
        with torch.no_grad():
            last_value = agent.value(self.next_obs)
        values_t = torch.stack(values)
        advantages = gae(
            torch.from_numpy(rewards).to(self.device),
            values_t,
            torch.from_numpy(ends).to(self.device),
            last_value,
            self.gamma,
            gae_lambda,
        )
        self._obs_for_stats = obs_t
        return Batch(
            _flat(obs_t),
            _flat(torch.stack(actions)),
            _flat(torch.stack(logprobs)),
            _flat(values_t),
            _flat(advantages),
            _flat(advantages + values_t),
            n,
        )

    def state_dict(self) -> dict:
        return {
            "next_obs": self.next_obs,
            "global_step": self.global_step,
            "batches_collected": self.batches_collected,
            "obs_for_stats": self._obs_for_stats,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
            "kl_beta": self.kl.beta if self.kl is not None else None,
            "episode_kl": torch.from_numpy(self.episode_kl.copy()),
            "envs": vector_env_state(self.envs),
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step = state["global_step"]
        self.batches_collected, self._obs_for_stats = (
            state["batches_collected"],
            to_device(state["obs_for_stats"], self.device),
        )
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        if self.kl is not None:
            self.kl.beta = state["kl_beta"]
        self.episode_kl = state["episode_kl"].numpy().copy()
        if restore_vector_env_state(self.envs, state["envs"]):
            self.next_obs = state["next_obs"].to(self.device)
        else:  # the episodes restarted at construction: keep their first observations, drop their KL sums
            self.episode_kl[:] = 0.0

    def _truncation_bootstrap(self, truncated: np.ndarray, info: dict) -> np.ndarray:
        """gamma * V(s_T) for environments cut by a time limit; their s_T is in info['final_obs']."""
        bonus = np.zeros(len(truncated), dtype=np.float32)
        if truncated.any():
            idx = np.flatnonzero(truncated)
            final_obs = torch.as_tensor(np.stack(info["final_obs"][idx]), device=self.device)
            with torch.no_grad():
                bonus[idx] = self.gamma * self.agent.value(final_obs).cpu().numpy()
        return bonus


def to_device(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """A checkpoint's tensor (loaded on the CPU) on the rollout's device; None stays None."""
    return x.to(device) if x is not None else None


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(T, num_envs, ...) -> (T * num_envs, ...), step-major."""
    return x.reshape(-1, *x.shape[2:])

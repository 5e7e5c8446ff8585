"""Shared plumbing for every algorithm file: hyperparameter checking, seeding, the agent contract and its
networks, fixed-length rollouts with GAE, evaluation, TensorBoard logging, checkpoints and the run summary.

An algorithm file imports from here and keeps only its own math. The agent contract (DESIGN.md section 3):

    agent.act(obs)               -> action, logprob, value      (rollouts, no grad)
    agent.evaluate(obs, action)  -> logprob, entropy, value     (updates)
    agent.distribution(obs)      -> torch Distribution          (KL terms, Fisher-vector products)
    agent.value(obs)             -> value
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import platform
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("tokengym")

# Argument validation in torch.distributions costs more than the tiny networks here; inputs come from our own code.
Distribution.set_default_validate_args(False)


# --------------------------------------------------------------------------------------------------- config
class ConfigError(ValueError):
    """A bad setting, caught before any work starts; the message names the value and what would be valid."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded safely, or that belongs to another algorithm, env or network."""


class NonFiniteError(RuntimeError):
    """A loss, gradient, reward or observation became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM or SIGINT arrived: the run finished its update, wrote a checkpoint and stopped."""


def check_settings(schema: type, values: DictConfig | dict, prefix: str):
    """Merge config values into a dataclass, checking names and types; its `__post_init__` checks ranges.
    `prefix` is where the values sit in the config (`algo.`, `env.`, or empty for top-level settings)."""
    valid = ", ".join(f.name for f in dataclasses.fields(schema))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
    except ConfigKeyError as err:
        raise ConfigError(f"unknown setting {prefix}{err.key} for {schema.__module__}; valid: {valid}") from None
    except ValidationError as err:
        raise ConfigError(f"bad value for {prefix}{err.full_key}: {err.msg.splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


@dataclass
class NetSettings:
    hidden_sizes: list[int]  # units per hidden layer of the MLP torsos
    activation: str  # tanh | relu
    normalize_obs: bool  # running mean/std of observations inside the agent

    def __post_init__(self):
        require(len(self.hidden_sizes) > 0 and min(self.hidden_sizes) > 0,
                f"net.hidden_sizes={self.hidden_sizes} must be a non-empty list of positive sizes, e.g. [64,64]")
        require(self.activation in ACTIVATIONS, f"net.activation={self.activation!r}; valid: {', '.join(ACTIVATIONS)}")


@dataclass
class RunSettings:
    """The top-level settings of conf/config.yaml (`algo` and `env` are checked by their own schemas)."""

    seed: int
    total_timesteps: int
    torch_threads: int
    eval_episodes: int
    run_root: str
    resume: str | None
    checkpoint_interval_s: float
    kl_alarm: float
    capture_video: bool
    net: NetSettings

    def __post_init__(self):
        for name in ("total_timesteps", "torch_threads", "eval_episodes"):
            require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be > 0")
        require(self.checkpoint_interval_s >= 0, f"checkpoint_interval_s={self.checkpoint_interval_s} must be >= 0")
        require(self.kl_alarm > 1, f"kl_alarm={self.kl_alarm} must be > 1 (a multiple of the KL target)")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_positive(hp, *names: str) -> None:
    for name in names:
        value = getattr(hp, name)
        require(value > 0, f"algo.{name}={value} must be > 0")


def require_choice(hp, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(hp, name)
    require(value in choices, f"algo.{name}={value!r}; valid: {', '.join(choices)}")


def require_fraction(hp, *names: str) -> None:
    for name in names:
        value = getattr(hp, name)
        require(0.0 <= value <= 1.0, f"algo.{name}={value} must lie in [0, 1]")


# --------------------------------------------------------------------------------------------------- seeding
def seed_everything(seed: int, torch_threads: int) -> None:
    """Seed numpy and torch and pin the thread count, so that a CPU run repeats exactly."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(torch_threads)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)  # tanh saturation makes denormal gradients, which are slow on x86


# --------------------------------------------------------------------------------------------------- networks
def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias (Huang et al. 2022, detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(in_dim: int, hidden_sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_dim, size)), ACTIVATIONS[activation]()]
        in_dim = size
    return nn.Sequential(*layers)


class NatureCNN(nn.Module):
    """Mnih et al. 2015 torso: uint8 frames (C, 84, 84) scaled to [0, 1], three convolutions, 512 units.

    Weights and frames are kept channels-last (NHWC) in memory: the same convolutions, which oneDNN runs about
    1.5x faster forward and backward on CPU in that layout (benchmarks/atari_speed.py measures it)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
        ).to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # one pass converts the dtype and the layout, a second scales in place
        return self.net(obs.to(torch.float32, memory_format=torch.channels_last).mul_(1 / 255.0))


class RunningMeanStd(nn.Module):
    """Running mean and variance (parallel algorithm of Chan et al.) kept as buffers, so checkpoints hold them."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = clip

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64).reshape(-1, *self.mean.shape)
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.float()) / torch.sqrt(self.var.float() + 1e-8)
        return torch.clamp(z, -self.clip, self.clip)


def inverse_cdf_sample(probs: torch.Tensor) -> torch.Tensor:
    """One index per row of `probs`: the number of cumulative probabilities below u ~ U(0, 1), by binary search
    (torch.multinomial costs several times more, from small action sets to a 5,000-token vocabulary). The clamp
    guards rounding in the last cumulative value."""
    u = torch.rand(probs.shape[:-1] + (1,))
    return torch.searchsorted(probs.cumsum(-1), u).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class CategoricalHead(nn.Module):
    """Logits for Discrete actions. Log-probabilities and entropy are computed from one log_softmax rather
    than through torch.distributions.Categorical, whose object set-up costs more than these small networks
    (tests/test_agent.py checks both give the same numbers)."""

    def __init__(self, torso_dim: int, n_actions: int):
        super().__init__()
        self.linear = layer_init(nn.Linear(torso_dim, n_actions), std=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.linear(features), dim=-1)

    @staticmethod
    def sample(logp: torch.Tensor) -> torch.Tensor:
        return inverse_cdf_sample(logp.exp())

    @staticmethod
    def log_prob_entropy(logp: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_prob = logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return log_prob, -(logp.exp() * logp).sum(-1)

    def mode(self, logp: torch.Tensor) -> torch.Tensor:
        return logp.argmax(-1)

    def distribution(self, logp: torch.Tensor) -> Distribution:
        return Categorical(logits=logp)


class GaussianHead(nn.Module):
    """Mean for Box actions, with a state-independent log standard deviation (diagonal Gaussian)."""

    def __init__(self, torso_dim: int, action_dim: int):
        super().__init__()
        self.linear = layer_init(nn.Linear(torso_dim, action_dim), std=0.01)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def sample(self, mean: torch.Tensor) -> torch.Tensor:
        return mean + self.log_std.exp() * torch.randn_like(mean)

    def log_prob_entropy(self, mean: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (action - mean) / self.log_std.exp()
        log_prob = (-0.5 * z**2 - self.log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        entropy = (self.log_std + 0.5 * np.log(2 * np.pi * np.e)).sum().expand(mean.shape[:-1])
        return log_prob, entropy

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def distribution(self, mean: torch.Tensor) -> Distribution:
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)


class Agent(nn.Module):
    """Actor-critic over any Gymnasium spaces: a torso per observation kind, a head per action kind.

    Actor and critic torsos are separate modules, or one shared module (Atari's Nature CNN).
    """

    def __init__(self, actor_torso: nn.Module, critic_torso: nn.Module, torso_dim: int,
                 action_space: gym.Space, obs_normalizer: RunningMeanStd | None = None):
        super().__init__()
        self.actor_torso, self.critic_torso = actor_torso, critic_torso
        self.obs_normalizer = obs_normalizer
        if isinstance(action_space, gym.spaces.Box):
            self.policy_head = GaussianHead(torso_dim, int(np.prod(action_space.shape)))
        else:
            self.policy_head = CategoricalHead(torso_dim, int(action_space.n))
        self.value_head = layer_init(nn.Linear(torso_dim, 1), std=1.0)

    def _prepare(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_normalizer.normalize(obs) if self.obs_normalizer is not None else obs

    def _head_outputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = self._prepare(obs)
        actor_features = self.actor_torso(obs)
        critic_features = actor_features if self.critic_torso is self.actor_torso else self.critic_torso(obs)
        return self.policy_head(actor_features), self.value_head(critic_features).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return self.policy_head.distribution(self.policy_head(self.actor_torso(self._prepare(obs))))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.critic_torso(self._prepare(obs))).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        policy_out, value = self._head_outputs(obs)
        action = self.policy_head.sample(policy_out)
        return action, self.policy_head.log_prob_entropy(policy_out, action)[0], value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        policy_out, value = self._head_outputs(obs)
        return *self.policy_head.log_prob_entropy(policy_out, action), value

    def begin_rollout(self) -> None:
        """Called when a batch of rollouts starts; agents with state across `act` calls (the text agent's
        KV cache) reset it here."""

    @torch.no_grad()
    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The evaluation policy: the mode (argmax, or the Gaussian mean)."""
        return self.policy_head.mode(self.policy_head(self.actor_torso(self._prepare(obs))))

    def actor_parameters(self) -> list[nn.Parameter]:
        """The policy's own parameters (TRPO's natural-gradient step moves only these)."""
        return list(self.actor_torso.parameters()) + list(self.policy_head.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic_torso.parameters()) + list(self.value_head.parameters())


def make_agent(obs_space: gym.Space, action_space: gym.Space, net_cfg: DictConfig) -> Agent:
    """Pick the torso from the observation space: vectors -> two MLPs, uint8 images -> one shared Nature CNN;
    a space that knows its agent builds it (token sequences -> a causal LM with a value head, envs/text)."""
    if hasattr(obs_space, "build_agent"):
        return obs_space.build_agent(action_space)
    require(isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)),
            f"action space {action_space} is not supported; use Discrete or Box")
    if isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1:
        hidden = list(net_cfg.hidden_sizes)
        normalizer = RunningMeanStd(obs_space.shape) if net_cfg.normalize_obs else None
        actor, critic = (mlp(obs_space.shape[0], hidden, net_cfg.activation) for _ in range(2))
        return Agent(actor, critic, hidden[-1], action_space, normalizer)
    if isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 3 and obs_space.dtype == np.uint8:
        torso = NatureCNN(obs_space.shape[0])
        return Agent(torso, torso, 512, action_space)
    raise ConfigError(f"observation space {obs_space} has no agent; vectors and (C, H, W) uint8 images do")


def slice_distribution(dist: Distribution, index: torch.Tensor) -> Distribution:
    """The distributions of a minibatch, taken from a whole batch's distribution (old-policy KL terms)."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits[index])
    base = dist.base_dist
    return Independent(Normal(base.loc[index], base.scale[index]), 1)


# --------------------------------------------------------------------------------------------------- rollouts
def gae(rewards: torch.Tensor, values: torch.Tensor, episode_ends: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> torch.Tensor:
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
        if num_minibatches == 1:
            yield slice(None)
        elif by == "env":
            steps = torch.arange(len(self) // self.num_envs)[:, None] * self.num_envs
            for envs in torch.randperm(self.num_envs).chunk(num_minibatches):
                yield (steps + envs[None, :]).reshape(-1)
        else:
            yield from torch.randperm(len(self)).chunk(num_minibatches)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (the reward normalisation of PPO's
    continuous-control code, as in gymnasium's NormalizeReward), kept here so checkpoints hold its state."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma, self.stats = gamma, RunningMeanStd(())
        self.discounted = np.zeros(num_envs)

    def __call__(self, rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
        self.discounted = self.discounted * self.gamma + rewards
        self.stats.update(torch.as_tensor(self.discounted))
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

    def __init__(self, beta: float, target: float | None, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, sequence_kl: float, n_steps: int) -> None:
        if self.target is not None:
            error = float(np.clip(sequence_kl / self.target - 1, -0.2, 0.2))
            self.beta *= 1 + error * n_steps / self.horizon


SAMPLES_LOGGED = 8  # finished episodes' texts shown in TensorBoard at each logged update


class Rollout:
    """Fixed-length segments of `num_steps` from each of the vector env's environments (Huang et al. 2022,
    detail 1), with the bootstrap at time-limit truncation done right (SB3 #633, CleanRL #198).

    `bootstrap_truncated=False` is for environments whose limit is part of the task (the text env's response
    limit, where the final reward is paid): nothing follows a truncation there, so nothing is bootstrapped."""

    def __init__(self, envs: gym.vector.VectorEnv, agent: Agent, num_steps: int, gamma: float, seed: int,
                 scale_rewards: bool = False, kl: KLController | None = None, bootstrap_truncated: bool = True):
        self.envs, self.agent, self.num_steps, self.gamma, self.kl = envs, agent, num_steps, gamma, kl
        self.bootstrap_truncated = bootstrap_truncated
        self.reward_scaler = RewardScaler(envs.num_envs, gamma) if scale_rewards else None
        self.episode_kl = np.zeros(envs.num_envs)  # running sum of log pi - log pi_ref in each episode
        self.episode_metrics: dict[str, list[float]] = {}  # per finished episode, e.g. text/gold_reward
        self.samples: list[str] = []  # the latest finished episodes' texts, for environments that give them
        obs, _ = envs.reset(seed=seed)
        envs.action_space.seed(seed)
        self.next_obs = torch.as_tensor(obs)
        self.global_step = 0
        self.batches_collected = 0
        self.finished_episodes: list[tuple[int, float, int]] = []  # (global step, return, length)
        self._obs_for_stats: torch.Tensor | None = None

    def collect(self, gae_lambda: float) -> Batch:
        agent, n, steps = self.agent, self.envs.num_envs, self.num_steps
        if agent.obs_normalizer is not None and self._obs_for_stats is not None:
            # Stats move only between batches, so a batch is collected and updated under the same normaliser.
            agent.obs_normalizer.update(self._obs_for_stats)
        agent.begin_rollout()
        obs, actions, logprobs, values, self._batch_kl = [], [], [], [], []
        rewards, ends = np.zeros((steps, n), dtype=np.float32), np.zeros((steps, n), dtype=np.float32)
        for t in range(steps):
            action, logprob, value = agent.act(self.next_obs)
            next_obs, reward, terminated, truncated, info = self.envs.step(action.numpy())
            ends[t] = terminated | truncated
            rewards[t] = self.reward_scaler(reward, ends[t] > 0) if self.reward_scaler is not None else reward
            if "ref_logprob" in info and self.kl is not None:
                rewards[t] -= self._kl_penalty(logprob.numpy() - info["ref_logprob"], ends[t] > 0)
            self.global_step += n
            if "final_obs" in info:
                if self.bootstrap_truncated:
                    rewards[t] += self._truncation_bootstrap(truncated & ~terminated, info)
                self._record_episodes(info)
            obs.append(self.next_obs); actions.append(action); logprobs.append(logprob); values.append(value)
            self.next_obs = torch.as_tensor(next_obs)
        obs_t = torch.stack(obs)
        self._check_finite(rewards, obs_t)
        self.batches_collected += 1
        if self.kl is not None and self._batch_kl:
            self.kl.update(float(np.mean(self._batch_kl)), steps * n)
        with torch.no_grad():
            last_value = agent.value(self.next_obs)
        values_t = torch.stack(values)
        advantages = gae(torch.from_numpy(rewards), values_t, torch.from_numpy(ends), last_value, self.gamma,
                         gae_lambda)
        self._obs_for_stats = obs_t
        flat = lambda x: x.reshape(-1, *x.shape[2:])
        return Batch(flat(obs_t), flat(torch.stack(actions)), flat(torch.stack(logprobs)), flat(values_t),
                     flat(advantages), flat(advantages + values_t), n)

    def _kl_penalty(self, step_kl: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """beta * (log pi - log pi_ref) for this step; finished episodes' total KL goes to the metrics."""
        self.episode_kl += step_kl
        if episode_end.any():
            finished = self.episode_kl[episode_end].tolist()
            self._batch_kl += finished
            self.episode_metrics.setdefault("text/kl", []).extend(finished)
            self.episode_kl[episode_end] = 0.0
        return (self.kl.beta * step_kl).astype(np.float32)

    def _check_finite(self, rewards: np.ndarray, obs: torch.Tensor) -> None:
        where = f"in update {self.batches_collected} (environment steps up to {self.global_step})"
        if not np.isfinite(rewards).all():
            bad = rewards[~np.isfinite(rewards)][0]
            raise NonFiniteError(f"the environment returned a non-finite reward ({bad}) {where}")
        if obs.is_floating_point() and not torch.isfinite(obs).all():
            raise NonFiniteError(f"the environment returned a non-finite observation {where}")

    def state_dict(self) -> dict:
        from envs.snapshot import vector_env_state

        return {"next_obs": self.next_obs, "global_step": self.global_step,
                "batches_collected": self.batches_collected, "obs_for_stats": self._obs_for_stats,
                "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
                "kl_beta": self.kl.beta if self.kl is not None else None,
                "episode_kl": torch.from_numpy(self.episode_kl.copy()), "envs": vector_env_state(self.envs)}

    def load_state_dict(self, state: dict) -> None:
        from envs.snapshot import restore_vector_env_state

        self.global_step = state["global_step"]
        self.batches_collected, self._obs_for_stats = state["batches_collected"], state["obs_for_stats"]
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        if self.kl is not None:
            self.kl.beta = state["kl_beta"]
        self.episode_kl = state["episode_kl"].numpy().copy()
        if restore_vector_env_state(self.envs, state["envs"]):
            self.next_obs = state["next_obs"]
        else:  # the episodes restarted at construction: keep their first observations, drop their KL sums
            self.episode_kl[:] = 0.0

    def _truncation_bootstrap(self, truncated: np.ndarray, info: dict) -> np.ndarray:
        """gamma * V(s_T) for environments cut by a time limit; their s_T is in info['final_obs']."""
        bonus = np.zeros(len(truncated), dtype=np.float32)
        if truncated.any():
            idx = np.flatnonzero(truncated)
            final_obs = torch.as_tensor(np.stack(info["final_obs"][idx]))
            with torch.no_grad():
                bonus[idx] = self.gamma * self.agent.value(final_obs).numpy()
        return bonus

    def _record_episodes(self, info: dict) -> None:
        """Episode statistics from RecordEpisodeStatistics, which sits innermost (raw, unclipped return)."""
        final = info.get("final_info", {})
        if "episode" not in final:
            return
        ep, mask = final["episode"], final["_episode"]
        for i in np.flatnonzero(mask):
            self.finished_episodes.append((self.global_step, float(ep["r"][i]), int(ep["l"][i])))
        for tag, values in final.get("metrics", {}).items():
            self.episode_metrics.setdefault(tag, []).extend(values[final["_metrics"]].tolist())
        if "samples" in final:
            self.samples = (self.samples + final["samples"][final["_samples"]].tolist())[-SAMPLES_LOGGED:]


# --------------------------------------------------------------------------------------------------- evaluation
def evaluate_policy(agent: Agent, env_cfg: DictConfig, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes under the greedy policy, one episode per environment."""
    from envs import make_vector_env

    return play_greedy(agent, make_vector_env(env_cfg, episodes, training=False), seed)


def record_video(agent: Agent, env_cfg: DictConfig, folder: Path, seed: int) -> list[Path]:
    """One greedy evaluation episode, recorded as MP4 in `folder`; returns the video files."""
    from envs import make_video_env

    play_greedy(agent, make_video_env(env_cfg, str(folder)), seed)
    return sorted(folder.glob("*.mp4"))


def play_greedy(agent: Agent, envs: gym.vector.VectorEnv, seed: int) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------------- runs
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "gymnasium", "ale-py", "transformers", "hydra-core", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file, flush it to disk, then rename over `path`: a crash or power cut mid-write
    leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load with torch's weights-only unpickler: tensors and plain data only, never code from the file."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refused to load {path}: it holds objects other than tensors and plain data, "
                              f"which could run code ({str(err).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({str(err).splitlines()[0]}); it may be "
                              f"truncated or corrupt: delete it to start the run afresh") from None


def check_checkpoint_meta(checkpoint: dict, path: Path, algo: str, env_id: str) -> None:
    meta = checkpoint.get("meta", {})
    if (meta.get("algo"), meta.get("env")) != (algo, env_id):
        raise CheckpointError(f"{path} is a checkpoint of {meta.get('algo')} on {meta.get('env')}, but this run "
                              f"is {algo} on {env_id}; resume it with the same algo and env, or use another folder")


def check_checkpoint_fits(checkpoint: dict, path: Path, algo: str, env_id: str, agent: nn.Module) -> None:
    check_checkpoint_meta(checkpoint, path, algo, env_id)
    ours = {k: tuple(v.shape) for k, v in agent.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in checkpoint["agent"].items()}
    if ours != theirs:
        diffs = [f"{k}: checkpoint {theirs.get(k)}, this agent {ours.get(k)}"
                 for k in sorted(ours.keys() | theirs.keys()) if ours.get(k) != theirs.get(k)]
        raise CheckpointError(f"{path} was saved by a network of another shape ({'; '.join(diffs[:3])}); "
                              f"use the run's own net settings (its config.yaml)")


class StopSignal:
    """SIGTERM (a scheduler pre-empting the job) or SIGINT: the CLI installs `handler`; the run checkpoints
    at the end of the current update and stops."""

    received: str | None = None

    @classmethod
    def handler(cls, signum, frame) -> None:
        cls.received = signal.Signals(signum).name


class RunFolder:
    """One run = one folder (DESIGN.md sec. 7): the resolved config, TensorBoard events, a checkpoint written
    atomically every `checkpoint_interval_s` and when a stop signal arrives, and summary.json at the end. The
    RL loop (Run) and SeqGAN (algos/seqgan.py) each say what goes into the checkpoint."""

    def __init__(self, cfg: DictConfig, algo: str, run_dir: Path):
        self.cfg, self.algo, self.dir = cfg, algo, run_dir
        self.checkpoint_path = run_dir / "checkpoint.pt"
        self.wall_before = 0.0

    def open(self, purge_step: int | None) -> None:
        """Write config.yaml and open the TensorBoard writer. When resuming, purge_step hides the events a killed
        process wrote after its last checkpoint (steps >= the first step this process logs), so curves continue
        with no duplicated steps."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(self.cfg, resolve=True).encode()))
        self.writer = SummaryWriter(str(self.dir), purge_step=purge_step)
        self.start_time = self.last_checkpoint_time = time.perf_counter()

    def load(self, path: Path) -> dict:
        checkpoint = load_checkpoint(path)
        check_checkpoint_meta(checkpoint, path, self.algo, self.cfg.env.id)
        return checkpoint

    def wall_clock(self) -> float:
        """Training time over every session of this run."""
        return self.wall_before + time.perf_counter() - self.start_time

    def checkpoint_due(self) -> bool:
        return bool(StopSignal.received) or \
            time.perf_counter() - self.last_checkpoint_time >= self.cfg.checkpoint_interval_s

    def write_checkpoint(self, meta: dict, state: dict) -> None:
        """The checkpoint: `state`, and `meta` beside the algo, env and wall-clock that `load` checks."""
        self.writer.flush()  # events up to this checkpoint are on disk before it is
        state = {"meta": {"algo": self.algo, "env": self.cfg.env.id, "wall_clock_s": self.wall_clock(), **meta},
                 **state}
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))
        self.last_checkpoint_time = time.perf_counter()

    def stop_if_signalled(self, unit: str, done: int, total: int) -> None:
        if StopSignal.received:
            raise Preempted(f"{StopSignal.received} received: stopped after {unit} {done} of {total} with a "
                            f"checkpoint; continue with resume={self.dir}")

    def check_finite(self, where: str, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            if not np.isfinite(value):
                raise NonFiniteError(f"{tag} became {value} at {where}; the last good checkpoint is kept at "
                                     f"{self.checkpoint_path}")

    def write_summary(self, results: dict) -> dict:
        summary = {"algo": self.algo, "env": self.cfg.env.id, "seed": self.cfg.seed, **results,
                   "versions": library_versions(), "git_commit": git_commit()}
        self.writer.close()
        atomic_write(self.dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
        return summary


class Run(RunFolder):
    """The RL loop's run: `start` resumes from the folder's checkpoint when there is one; `end_update` is called
    once per update (checks, logging, checkpoints, stop signals); `finish` writes the final checkpoint, evaluates
    the policy and writes the summary."""

    def __init__(self, cfg: DictConfig, algo: str, run_dir: Path, agent: Agent, rollout: Rollout,
                 num_updates: int, kl_target: float | None):
        super().__init__(cfg, algo, run_dir)
        self.agent, self.rollout, self.num_updates, self.kl_target = agent, rollout, num_updates, kl_target
        self.log_every = max(1, num_updates // 1000)  # at most about a thousand points per loss curve
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def start(self, optimizers: dict[str, torch.optim.Optimizer], algo_state: dict) -> tuple[int, dict]:
        """Returns (first update to run, algorithm state), both from the checkpoint when resuming."""
        self.optimizers, first_update = optimizers, 0
        if self.checkpoint_path.exists():
            first_update, algo_state = self._restore()
        self.open(purge_step=self.rollout.global_step + 1 if first_update else None)
        self.start_step = self.rollout.global_step
        return first_update, algo_state

    def _restore(self) -> tuple[int, dict]:
        checkpoint = load_checkpoint(self.checkpoint_path)
        check_checkpoint_fits(checkpoint, self.checkpoint_path, self.algo, self.cfg.env.id, self.agent)
        self.agent.load_state_dict(checkpoint["agent"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        self.rollout.load_state_dict(checkpoint["rollout"])
        torch.set_rng_state(checkpoint["torch_rng"])
        self.wall_before = checkpoint["meta"]["wall_clock_s"]
        next_update = checkpoint["meta"]["next_update"]
        log.info("resuming %s from update %d (environment step %d)", self.checkpoint_path, next_update,
                 self.rollout.global_step)
        return next_update, checkpoint["algo_state"]

    def save_checkpoint(self, next_update: int, algo_state: dict) -> None:
        self.write_checkpoint({"global_step": self.rollout.global_step, "next_update": next_update}, {
            "agent": self.agent.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "algo_state": algo_state, "rollout": self.rollout.state_dict(), "torch_rng": torch.get_rng_state(),
        })

    def end_update(self, update: int, scalars: dict[str, float], algo_state: dict) -> None:
        self._check_finite(update, scalars)
        self._log(update, scalars)
        if self.checkpoint_due():
            self.save_checkpoint(update + 1, algo_state)
        self.stop_if_signalled("update", update + 1, self.num_updates)

    def _check_finite(self, update: int, scalars: dict[str, float]) -> None:
        self.check_finite(f"update {update}", scalars)
        if not all(torch.isfinite(p).all() for p in self.agent.parameters()):
            raise NonFiniteError(f"the agent's parameters became non-finite at update {update} (a non-finite "
                                 f"gradient); the last good checkpoint is kept at {self.checkpoint_path}")
        kl = scalars.get("losses/approx_kl")
        if kl is not None and self.kl_target is not None and kl > self.cfg.kl_alarm * self.kl_target:
            log.warning("KL DIVERGING: KL(pi_old || pi) = %.4g at update %d is %.0fx the target %.4g "
                        "(kl_alarm=%g); consider a smaller learning rate", kl, update, kl / self.kl_target,
                        self.kl_target, self.cfg.kl_alarm)

    def _log(self, update: int, scalars: dict[str, float]) -> None:
        """New finished episodes always; losses every `log_every` updates. x-axis = environment steps."""
        episodes, self.rollout.finished_episodes = self.rollout.finished_episodes, []
        for step, ret, length in episodes:
            self.writer.add_scalar("charts/episodic_return", ret, step)
            self.writer.add_scalar("charts/episodic_length", length, step)
        if update % self.log_every == 0 or update == self.num_updates - 1:
            step = self.rollout.global_step
            sps = (step - self.start_step) / (time.perf_counter() - self.start_time)
            metrics = {tag: float(np.mean(v)) for tag, v in self.rollout.episode_metrics.items() if v}
            if self.rollout.kl is not None:
                metrics["text/kl_coef"] = self.rollout.kl.beta
            for tag, value in {**scalars, **metrics, "charts/SPS": sps}.items():
                self.writer.add_scalar(tag, value, step)
            self.rollout.episode_metrics = {}
            if self.rollout.samples:
                self.writer.add_text("text/samples", "\n".join(f"- `{s}`" for s in self.rollout.samples), step)

    def finish(self, algo_state: dict) -> dict:
        """Final checkpoint, final evaluation, summary.json; returns the summary."""
        wall, steps = self.wall_clock(), self.rollout.global_step
        self.save_checkpoint(self.num_updates, algo_state)
        returns = evaluate_policy(self.agent, self.cfg.env, self.cfg.eval_episodes, self.cfg.seed + 10_000)
        self.writer.add_scalar("eval/mean_return", float(returns.mean()), steps)
        if self.cfg.capture_video:
            videos = record_video(self.agent, self.cfg.env, self.dir / "videos", self.cfg.seed + 10_000)
            log.info("evaluation video: %s", ", ".join(map(str, videos)))
        summary = self.write_summary({
            "total_env_steps": steps, "wall_clock_s": round(wall, 3),
            "steps_per_second": round(steps / wall, 1) if wall > 0 else None,
            "eval": {"mean": float(returns.mean()), "std": float(returns.std()), "episodes": len(returns),
                     "policy": "deterministic (argmax / Gaussian mean)", "returns": returns.tolist()},
        })
        log.info("eval return %.1f +- %.1f over %d episodes; run folder: %s",
                 returns.mean(), returns.std(), len(returns), self.dir)
        return summary


def check_config(cfg: DictConfig, schema: type):
    """The run's, the env's and the algorithm's settings checked (ConfigError naming the first bad one); returns
    the algorithm's hyperparameters as `schema`."""
    from envs import check_env_settings, check_video_support

    check_settings(RunSettings, {f.name: cfg[f.name] for f in dataclasses.fields(RunSettings)}, "")
    check_env_settings(cfg.env)
    if cfg.capture_video:
        check_video_support(cfg.env)
    return check_settings(schema, cfg.algo, "algo.")


def setup(cfg: DictConfig, algo: str, schema: type, run_dir: Path):
    """Everything an algorithm needs before its loop: checked hyperparameters, seeds, envs, agent, run folder."""
    from envs import make_vector_env

    hp = check_config(cfg, schema)
    batch_size = cfg.env.num_envs * hp.num_steps
    minibatches = getattr(hp, "num_minibatches", 1)
    require(getattr(hp, "minibatch_by", "sample") == "sample" or cfg.env.num_envs % minibatches == 0,
            f"algo.minibatch_by=env splits env.num_envs={cfg.env.num_envs} environments into "
            f"algo.num_minibatches={minibatches} equal groups; choose a divisor of {cfg.env.num_envs}")
    require(batch_size % minibatches == 0,
            f"a batch of env.num_envs * algo.num_steps = {cfg.env.num_envs} * {hp.num_steps} = {batch_size} "
            f"samples cannot be split into algo.num_minibatches={minibatches} equal minibatches; "
            f"choose a divisor of {batch_size}")
    require(cfg.total_timesteps >= batch_size,
            f"total_timesteps={cfg.total_timesteps} is less than one batch ({batch_size} samples)")
    seed_everything(cfg.seed, cfg.torch_threads)
    envs = make_vector_env(cfg.env, cfg.env.num_envs, training=True)
    agent = make_agent(envs.single_observation_space, envs.single_action_space, cfg.net)
    kl = KLController(cfg.env.kl_coef, cfg.env.kl_target, cfg.env.kl_horizon) if cfg.env.get("kl_coef") else None
    rollout = Rollout(envs, agent, hp.num_steps, hp.gamma, cfg.seed, scale_rewards=cfg.env.normalize_reward, kl=kl,
                      bootstrap_truncated=cfg.env.get("bootstrap_truncated", True))
    num_updates = cfg.total_timesteps // batch_size
    kl_target = getattr(hp, "target_kl", None) or getattr(hp, "max_kl", None)
    return hp, Run(cfg, algo, run_dir, agent, rollout, num_updates, kl_target), agent, rollout, num_updates


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, 0 no better than a constant."""
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - predicted).var() / var)

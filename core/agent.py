"""The agent contract (DESIGN.md section 3) as a type, with the policy heads and the sampler that every agent
shares, the MLP and CNN agents of algos/networks.py and the text agent of envs/text/agent.py alike.

Algorithms and the shared rollout use exactly the members of `AgentContract`; an agent that lacks one is
refused when it is built (algos/networks.py, make_agent), not mid-run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

# Argument validation in torch.distributions costs more than the tiny networks here; inputs come from our own code.
Distribution.set_default_validate_args(False)


@runtime_checkable
class AgentContract(Protocol):
    """What algorithms and the rollout call. Observations and actions are batched tensors on the agent's device."""

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rollouts, no grad: (sampled action, its log-probability, V(s))."""
        ...

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Updates: (log pi(a|s), entropy of pi(.|s), V(s)), differentiable."""
        ...

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi(.|s) whole, for KL terms and Fisher-vector products (TRPO, PPO-penalty)."""
        ...

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s), differentiable (critic regression, bootstraps)."""
        ...

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The evaluation policy: the mode (argmax, or the Gaussian mean)."""
        ...

    def begin_rollout(self, previous_obs: torch.Tensor | None) -> None:
        """A batch of rollouts starts. `previous_obs` are the last batch's observations (None before the first):
        an agent that normalises observations updates its statistics from them here, so a batch is collected
        and updated under one normaliser; an agent with state across `act` calls (a KV cache) resets it."""
        ...

    def actor_parameters(self) -> list[nn.Parameter]:
        """The policy's own parameters (TRPO's natural-gradient step moves only these)."""
        ...

    def critic_parameters(self) -> list[nn.Parameter]:
        """The value function's own parameters (fitted apart by PG and TRPO)."""
        ...

    def parameters(self) -> Iterable[nn.Parameter]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state_dict: dict) -> object: ...


@runtime_checkable
class PretrainingAgent(Protocol):
    """An agent with pre-training data of its own (the text agent of a task with a corpus), for PPO-ptx."""

    def pretraining_loss(self, batch_size: int) -> torch.Tensor:
        """The mean negative log-likelihood of `batch_size` pre-training sequences."""
        ...


def layer_init(layer: nn.Linear | nn.Conv2d, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias (Huang et al. 2022, detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, bias)
    return layer


def inverse_cdf_sample(probs: torch.Tensor) -> torch.Tensor:
    """One index per row of `probs`: the number of cumulative probabilities below u ~ U(0, 1), by binary search
    (torch.multinomial costs several times more, from small action sets to a 5,000-token vocabulary). The clamp
    guards rounding in the last cumulative value."""
    u = torch.rand(probs.shape[:-1] + (1,), device=probs.device)
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

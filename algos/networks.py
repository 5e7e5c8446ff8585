"""The networks of the MLP and image agents: torsos (MLP, Nature CNN), the observation normaliser, and the
actor-critic `Agent` that puts a torso and a policy head (core/agent.py) together. `make_agent` picks them from
the environment's spaces; an observation space that knows its own agent (the text env's) builds it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from algos import distributed
from algos.settings import NetSettings
from core.agent import AgentContract, CategoricalHead, GaussianHead, layer_init
from core.checks import require
from core.devices import CPU, Placement
from core.errors import ConfigError

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
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        ).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # one pass converts the dtype and the layout, a second scales in place
        return self.net(obs.to(torch.float32, memory_format=torch.channels_last).mul_(1 / 255.0))


class RunningMeanStd(nn.Module):
    """Running mean and variance (parallel algorithm of Chan et al.) kept as buffers, so checkpoints hold them.
    A batch's moments are those of every rank's samples together (algos/distributed.py), so ranks agree."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, device: torch.device | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64, device=device))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64, device=device))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64, device=device))
        self.clip = clip

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64).reshape(-1, *self.mean.shape)
        batch_mean, batch_var, n = distributed.moments(x)
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.float()) / torch.sqrt(self.var.float() + 1e-8)
        return torch.clamp(z, -self.clip, self.clip)


class Agent(nn.Module):
    """Actor-critic over any Gymnasium spaces: a torso per observation kind, a head per action kind
    (core/agent.py's AgentContract). Actor and critic torsos are separate modules, or one shared module (Atari's
    Nature CNN)."""

    def __init__(
        self,
        actor_torso: nn.Module,
        critic_torso: nn.Module,
        torso_dim: int,
        action_space: gym.Space,
        obs_normalizer: RunningMeanStd | None = None,
    ):
        super().__init__()
        self.actor_torso, self.critic_torso = actor_torso, critic_torso
        self.obs_normalizer = obs_normalizer
        self.policy_head: CategoricalHead | GaussianHead
        if isinstance(action_space, gym.spaces.Box):
            self.policy_head = GaussianHead(torso_dim, int(np.prod(action_space.shape)))
        else:
            self.policy_head = CategoricalHead(torso_dim, int(action_space.n))  # type: ignore[attr-defined]
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

    def begin_rollout(self, previous_obs: torch.Tensor | None) -> None:
        if self.obs_normalizer is not None and previous_obs is not None:
            self.obs_normalizer.update(previous_obs)

    @torch.no_grad()
    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy_head.mode(self.policy_head(self.actor_torso(self._prepare(obs))))

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.actor_torso.parameters()) + list(self.policy_head.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic_torso.parameters()) + list(self.value_head.parameters())


def make_agent(
    obs_space: gym.Space, action_space: gym.Space, net: NetSettings, placement: Placement = CPU
) -> AgentContract:
    """Pick the torso from the observation space: vectors -> two MLPs, uint8 images -> one shared Nature CNN;
    a space that knows its agent builds it (token sequences -> a causal LM with a value head, envs/text), in the
    run's precision. The agent is moved to the run's device."""
    if hasattr(obs_space, "build_agent"):
        agent = obs_space.build_agent(action_space, placement)
    else:
        require(
            placement.precision == "fp32",
            f"precision={placement.precision} is for the language-model agents (env kind text); this env's "
            f"{'Nature CNN' if len(obs_space.shape or ()) == 3 else 'MLP'} computes in fp32: set precision=fp32",
        )
        agent = _actor_critic(obs_space, action_space, net)
    missing = [name for name in _contract_members() if not hasattr(agent, name)]
    require(not missing, f"the agent {type(agent).__name__} lacks {', '.join(missing)} of core.agent.AgentContract")
    return agent.to(placement.device)


def _contract_members() -> list[str]:
    return [name for name in vars(AgentContract) if not name.startswith("_")]


def _actor_critic(obs_space: gym.Space, action_space: gym.Space, net: NetSettings) -> Agent:
    require(
        isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)),
        f"action space {action_space} is not supported; use Discrete or Box",
    )
    if isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1:
        normalizer = RunningMeanStd(obs_space.shape) if net.normalize_obs else None
        actor, critic = (mlp(obs_space.shape[0], net.hidden_sizes, net.activation) for _ in range(2))
        return Agent(actor, critic, net.hidden_sizes[-1], action_space, normalizer)
    if isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 3 and obs_space.dtype == np.uint8:
        torso = NatureCNN(obs_space.shape[0])
        return Agent(torso, torso, 512, action_space)
    raise ConfigError(f"observation space {obs_space} has no agent; vectors and (C, H, W) uint8 images do")


def slice_distribution(dist: Distribution, index: torch.Tensor | slice) -> Distribution:
    """The distributions of a minibatch, taken from a whole batch's distribution (old-policy KL terms)."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits[index])
    base = dist.base_dist  # type: ignore[attr-defined]
    return Independent(Normal(base.loc[index], base.scale[index]), 1)

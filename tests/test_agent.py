"""The agent contract and the rollout's bookkeeping."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch.distributions import kl_divergence

from algos.networks import RunningMeanStd, make_agent
from algos.rollout import Batch, Rollout
from algos.settings import NetSettings
from core.agent import CategoricalHead
from core.errors import ConfigError

NET = NetSettings(hidden_sizes=[16, 16], activation="tanh", normalize_obs=False)


def make(obs_space, action_space, net=NET):
    torch.manual_seed(0)
    return make_agent(obs_space, action_space, net)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))])
def test_act_and_evaluate_agree_with_torch_distributions(action_space):
    agent = make(gym.spaces.Box(-1, 1, (4,)), action_space)
    with torch.no_grad():  # give the Gaussian a non-trivial standard deviation
        for p in agent.policy_head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = torch.randn(64, 4)
    action, logprob, value = agent.act(obs)
    assert action.shape == ((64,) if isinstance(action_space, gym.spaces.Discrete) else (64, 2))
    dist = agent.distribution(obs)
    torch.testing.assert_close(logprob, dist.log_prob(action))
    lp, entropy, v = agent.evaluate(obs, action)
    torch.testing.assert_close(lp, dist.log_prob(action))
    torch.testing.assert_close(entropy, dist.entropy())
    torch.testing.assert_close(v, value)
    assert kl_divergence(dist, agent.distribution(obs)).abs().max() < 1e-6


def test_categorical_sampling_follows_the_probabilities():
    head = CategoricalHead(1, 3)
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(60_000, 3)
    torch.manual_seed(0)
    freq = torch.bincount(head.sample(logp), minlength=3) / 60_000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.01, rtol=0)


def test_gradients_reach_only_the_right_parameters():
    agent = make(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (2,)))
    assert {id(p) for p in agent.actor_parameters()} | {id(p) for p in agent.critic_parameters()} == {
        id(p) for p in agent.parameters()
    }
    agent.value(torch.randn(8, 4)).sum().backward()
    assert all(p.grad is None for p in agent.actor_parameters())


def test_image_observations_get_a_shared_nature_cnn():
    agent = make(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6))
    assert agent.actor_torso is agent.critic_torso
    action, logprob, value = agent.act(torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8).float())
    assert action.shape == logprob.shape == value.shape == (5,)


def test_unsupported_observation_space_is_refused():
    with pytest.raises(ConfigError, match="observation space"):
        make(gym.spaces.Box(-1, 1, (2, 3)), gym.spaces.Discrete(2))


def test_running_mean_std_matches_numpy():
    rms = RunningMeanStd((3,))
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(1000, 3))
    for chunk in np.split(data, 10):
        rms.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-4)


class ConstantEnv(gym.Env):
    """Reward 1 per step; ends by termination after `terminate_after` steps, if given."""

    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_after=None):
        self.terminate_after, self.t = terminate_after, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 1.0, self.t == self.terminate_after, False, {}


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_truncation_is_bootstrapped_and_termination_is_not(ending):
    def make_env():
        env = ConstantEnv(terminate_after=3) if ending == "terminated" else gym.wrappers.TimeLimit(ConstantEnv(), 3)
        return gym.wrappers.RecordEpisodeStatistics(env)

    envs = SyncVectorEnv([make_env], autoreset_mode=AutoresetMode.SAME_STEP)
    agent = make(envs.single_observation_space, envs.single_action_space)
    with torch.no_grad():  # V(s) = 10 everywhere
        agent.value_head.weight.zero_()
        agent.value_head.bias.fill_(10.0)
    gamma = 0.5
    rollout = Rollout(envs, agent, num_steps=4, gamma=gamma, seed=0)
    batch = rollout.collect(gae_lambda=1.0)
    # step 3 ends the first episode; step 4 starts the next, cut by the segment and bootstrapped from V = 10
    tail = 1 + gamma * 10 if ending == "truncated" else 1.0
    expected = [1 + gamma * (1 + gamma * tail), 1 + gamma * tail, tail, 1 + gamma * 10]
    np.testing.assert_allclose(batch.returns.numpy(), expected, rtol=1e-6)
    assert rollout.finished_episodes == [(3, 3.0, 3)]


def test_minibatches_by_env_hold_whole_environments():
    steps, num_envs = 5, 6
    batch = Batch(*(torch.arange(steps * num_envs) for _ in range(6)), num_envs=num_envs)
    minibatches = list(batch.minibatch_indices(3, by="env"))
    assert sorted(torch.cat(minibatches).tolist()) == list(range(steps * num_envs))
    for idx in minibatches:
        envs = set((idx % num_envs).tolist())
        assert len(envs) == 2 and len(idx) == 2 * steps  # every step of two environments


class RestartingEnvs(SyncVectorEnv):
    """A vector env that cannot save its episodes (as ale-py's emulators cannot)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return False


def test_resume_on_an_env_that_restarts_keeps_the_fresh_observations():
    def envs():
        return RestartingEnvs(
            [lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))] * 2,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )

    agent = make(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Discrete(2))
    first = Rollout(envs(), agent, num_steps=8, gamma=0.99, seed=0)
    first.collect(gae_lambda=0.95)
    resumed = Rollout(envs(), agent, num_steps=8, gamma=0.99, seed=1)
    fresh = resumed.next_obs.clone()
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed.next_obs, fresh) and not torch.equal(fresh, first.next_obs)
    assert resumed.global_step == first.global_step == 16

"""The group-relative algorithms (GRPO, RLOO): their advantages and KL term on hand-computed cases, grouped resets,
short runs, resume, and bad input."""

import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from algos import grpo, rloo
from algos.group_rollout import EpisodeBatch, GroupRollout
from algos.networks import make_agent
from algos.run_folder import StopSignal
from algos.settings import NetSettings
from core.errors import ConfigError, Preempted
from envs import check_env_settings, make_vector_env
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parent.parent
NET = NetSettings(hidden_sizes=[16, 16], activation="tanh", normalize_obs=False)
TEXT = ["env=text", "env.task=examples/terse_task.py:make_task", "env.max_new_tokens=4", "env.max_prompt_tokens=8"]


# ------------------------------------------------------------------------------------------- the math by hand
def test_grpo_advantages_are_the_returns_standardised_within_each_group():
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    scaled = grpo.group_relative_advantages(returns, group_size=3, scale=True)
    # group 1: mean 2, sample std 1; group 2: all equal, so zero advantage and no division by its zero std
    assert scaled.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    centred = grpo.group_relative_advantages(torch.tensor([0.0, 4.0, 1.0, 1.0]), group_size=2, scale=False)
    assert centred.tolist() == pytest.approx([-2.0, 2.0, 0.0, 0.0])  # Dr. GRPO: no std division


def test_all_equal_rewards_give_zero_advantage_and_no_nan():
    advantages = grpo.group_relative_advantages(torch.full((8,), 0.7), group_size=4, scale=True)
    assert torch.isfinite(advantages).all() and (advantages == 0).all()
    assert (rloo.leave_one_out_advantages(torch.full((8,), 0.7), k=4) == 0).all()


def test_rloo_baseline_is_the_mean_of_the_other_episodes():
    returns = torch.tensor([1.0, 2.0, 6.0])  # baselines (2+6)/2=4, (1+6)/2=3.5, (1+2)/2=1.5
    assert rloo.leave_one_out_advantages(returns, k=3).tolist() == pytest.approx([-3.0, -1.5, 4.5])


def test_k3_kl_on_a_hand_made_case():
    logprob, ref = torch.log(torch.tensor([0.5, 0.2, 0.3])), torch.log(torch.tensor([0.25, 0.2, 0.6]))
    # r = pi_ref / pi = 0.5, 1, 2: r - log r - 1
    expected = [0.5 - np.log(0.5) - 1, 0.0, 2 - np.log(2) - 1]
    kl = grpo.k3_kl(logprob, ref)
    assert kl.tolist() == pytest.approx(expected, abs=1e-6) and (kl >= 0).all()


def test_loss_aggregations_weigh_steps_as_their_papers_say():
    per_step = torch.tensor([1.0, 1.0, 1.0, 4.0])
    episode, lengths = torch.tensor([0, 0, 0, 1]), torch.tensor([3, 1])
    assert grpo.aggregate(per_step, episode, lengths, "sequence", cap=10).item() == pytest.approx((1 + 4) / 2)
    assert grpo.aggregate(per_step, episode, lengths, "token", cap=10).item() == pytest.approx(7 / 4)
    assert grpo.aggregate(per_step, episode, lengths, "constant", cap=10).item() == pytest.approx(7 / 20)


def test_the_rloo_loss_is_minus_advantage_times_the_sequence_log_probability():
    logprob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    episode, advantages = torch.tensor([0, 0, 1]), torch.tensor([2.0, -1.0])
    loss = rloo.reinforce_loss(logprob, advantages, episode)
    assert loss.item() == pytest.approx(-(2.0 * -3.0 + -1.0 * -0.5) / 2)
    loss.backward()
    assert logprob.grad.tolist() == pytest.approx([-1.0, -1.0, 0.5])


def test_sequence_level_clipping_clips_the_product_of_the_tokens_ratios():
    """Episode 0: log-ratios 0.1 + 0.1, r = e^0.2 = 1.221 > 1.2 with A = +1: clipped to 1.2, no gradient;
    episode 1: r = e^-0.3 = 0.741 < 0.8 with A = -1: min(-0.741, -0.8) = -0.8, clipped. Token-level clipping
    leaves episode 0's tokens (1.105 each) unclipped."""
    log_ratio = torch.tensor([0.1, 0.1, -0.3], requires_grad=True)
    episode, advantages = torch.tensor([0, 0, 1]), torch.tensor([1.0, -1.0])
    loss = rloo.clipped_sequence_ratio_loss(log_ratio, advantages, episode, 0.2)
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2)
    loss.backward()
    assert log_ratio.grad.tolist() == [0.0, 0.0, 0.0]
    per_token = rloo.clipped_sequence_loss(log_ratio.detach().exp(), advantages, episode, 0.2)
    assert per_token.item() == pytest.approx(-(2 * math.exp(0.1) - 0.8) / 2)


# ------------------------------------------------------------------------------------------- grouped resets
def grouped_rollout(envs, group_size=4, max_steps=500):
    agent = make_agent(envs.single_observation_space, envs.single_action_space, NET)
    return GroupRollout(envs, agent, group_size, max_steps, seed=0, kl=None, env_name="test env")


def cartpoles(n):
    def make():
        return gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))

    return SyncVectorEnv([make] * n, autoreset_mode=AutoresetMode.SAME_STEP)


def test_grouped_resets_start_each_group_from_one_state_and_groups_differ():
    rollout = grouped_rollout(cartpoles(8))
    batch = rollout.collect()
    first_obs = batch.obs[: rollout.envs.num_envs].view(2, 4, -1)  # step 0 of every episode, step-major
    assert (first_obs == first_obs[:, :1]).all() and not torch.equal(first_obs[0, 0], first_obs[1, 0])
    assert len(batch) == int(batch.lengths.sum()) == rollout.global_step
    assert batch.returns.tolist() == batch.lengths.float().tolist()  # CartPole: +1 per step, whole episodes
    assert [e.tolist() for e in torch.unique(batch.episode, return_counts=True)][1] == batch.lengths.tolist()


def test_a_finished_episode_waits_and_the_step_cap_truncates_the_rest():
    rollout = grouped_rollout(cartpoles(4), max_steps=12)
    batch = rollout.collect()
    assert batch.lengths.max().item() <= 12 and rollout.global_step == len(batch)


def test_text_prompts_are_shared_within_a_group(tiny_lm):
    cfg = compose_config(*TEXT, f"env.policy_model={tiny_lm}", "env.num_envs=8")
    envs = make_vector_env(check_env_settings(cfg.env), 8, training=True)
    obs, _ = envs.reset(seed=[3, 3, 3, 3, 9, 9, 9, 9])
    assert (obs[:4] == obs[0]).all() and (obs[4:] == obs[4]).all()
    again, _ = envs.reset(seed=[3] * 8)
    assert (again == obs[0]).all()


def test_atari_groups_start_from_the_same_frames():
    envs = make_vector_env(check_env_settings(compose_config("env=breakout").env), 4, training=True)
    obs, _ = envs.reset(seed=[5, 5, 11, 11])
    assert np.array_equal(obs[0], obs[1]) and np.array_equal(obs[2], obs[3])


class SeedIgnoringEnv(gym.Env):
    """Resets to a random state whatever its seed (a global generator): it cannot form groups."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, True, False, {}


def test_an_env_that_ignores_seeds_is_refused_naming_it():
    envs = SyncVectorEnv([SeedIgnoringEnv] * 4, autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ConfigError, match="test env ignores per-environment seeds"):
        grouped_rollout(envs, group_size=2).collect()


# ------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("module, steps", [(grpo, 40_000), (rloo, 80_000)])
def test_a_short_cartpole_run_clearly_improves(module, steps, compose_cfg, tmp_path):
    """A random policy scores about 22."""
    cfg = compose_cfg(
        f"algo={module.__name__.split('.')[-1]}",
        "env=cartpole",
        "env.num_envs=32",
        f"total_timesteps={steps}",
        "seed=1",
    )
    summary = module.train(cfg, tmp_path)
    assert summary["eval"]["mean"] > 150, summary["eval"]


def test_grpo_raises_a_programmatic_text_reward(tiny_lm, compose_cfg, tmp_path):
    """The terse task pays 2 for "fun" and -0.5 a word; a random tiny LM starts well below its best."""
    overrides = [
        "algo=grpo",
        *TEXT,
        f"env.policy_model={tiny_lm}",
        "env.num_envs=32",
        "env.kl_coef=0",
        "algo.kl_coef=0.01",
        "algo.group_size=8",
        "algo.learning_rate=3e-3",
        "eval_episodes=16",
    ]
    before = grpo.train(compose_cfg(*overrides, "total_timesteps=1"), tmp_path / "before")
    after = grpo.train(compose_cfg(*overrides, "total_timesteps=3000"), tmp_path / "after")
    assert after["eval"]["mean"] > before["eval"]["mean"] + 0.5, (before["eval"], after["eval"])


def test_a_group_run_stopped_mid_episode_resumes_to_the_same_result(compose_cfg, tmp_path, monkeypatch):
    overrides = [
        "algo=grpo",
        "env=cartpole",
        "env.num_envs=8",
        "algo.group_size=4",
        "total_timesteps=3000",
        "checkpoint_interval_s=0",
        "eval_episodes=3",
    ]
    reference = grpo.train(compose_cfg(*overrides), tmp_path / "ref")
    steps = {"n": 0}
    step = SyncVectorEnv.step

    def step_then_stop(self, actions):  # SIGTERM arrives while a batch's episodes are being played
        steps["n"] += 1
        if steps["n"] == 2 * 60 + 7:
            StopSignal.received = "SIGTERM"
        return step(self, actions)

    monkeypatch.setattr(SyncVectorEnv, "step", step_then_stop)
    with pytest.raises(Preempted):
        grpo.train(compose_cfg(*overrides), tmp_path / "run")
    monkeypatch.undo()
    StopSignal.received = None
    resumed = grpo.train(compose_cfg(*overrides), tmp_path / "run")
    assert resumed["total_env_steps"] == reference["total_env_steps"]
    params = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["agent"] for d in ("ref", "run")]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algo=grpo", "algo.group_size=1"], "algo.group_size=1: a group needs at least 2"),
        (["algo=rloo", "algo.group_size=1"], "algo.group_size=1: the leave-one-out baseline needs at least 2"),
        (
            ["algo=grpo", "env.num_envs=10", "algo.group_size=4"],
            "env.num_envs=10 is not a multiple of algo.group_size=4",
        ),
        (["algo=rloo", "algo.max_episode_steps=0"], "algo.max_episode_steps=0 is less than one step"),
        (["algo=grpo", "algo.kl_coef=0.1"], "algo.kl_coef=0.1 puts the KL to a reference policy in the loss"),
    ],
)
def test_bad_group_settings_exit_2_naming_the_value_and_the_fix(overrides, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "algos", "env=cartpole", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_the_episode_batch_cuts_minibatches_of_whole_episodes():
    batch = EpisodeBatch(
        obs=torch.zeros(7, 1),
        actions=torch.zeros(7),
        logprobs=torch.zeros(7),
        ref_logprobs=None,
        episode=torch.tensor([0, 1, 2, 3, 0, 2, 2]),
        returns=torch.zeros(4),
        lengths=torch.tensor([2, 1, 3, 1]),
        group_size=2,
    )
    minibatches = list(batch.minibatch_indices(2))
    assert sorted(torch.cat(minibatches).tolist()) == list(range(7))
    for idx in minibatches:
        episodes = set(batch.episode[idx].tolist())
        assert len(episodes) == 2 and len(idx) == int(batch.lengths[list(episodes)].sum())

"""Short learning runs: each algorithm must clearly beat a random policy, on discrete and continuous actions."""

import importlib

import pytest

# (algorithm, CartPole budget): a random policy scores about 22; each of these reaches 140-500 at its seed.
CARTPOLE_BUDGETS = [("ppo_clip", 20_000), ("a2c", 40_000), ("pg", 40_000), ("trpo", 30_000), ("ppo_penalty", 30_000)]
ALGOS = [name for name, _ in CARTPOLE_BUDGETS]


def train(cfg, tmp_path):
    return importlib.import_module(f"algos.{cfg.algo.name}").train(cfg, tmp_path)


@pytest.mark.parametrize("algo, steps", CARTPOLE_BUDGETS)
def test_discrete_actions_cartpole_beats_random(algo, steps, compose_cfg, tmp_path):
    summary = train(compose_cfg(f"algo={algo}", "env=cartpole", f"total_timesteps={steps}", "seed=1"), tmp_path)
    assert summary["eval"]["mean"] > 100, summary["eval"]


@pytest.mark.parametrize("algo", ALGOS)
def test_continuous_actions_learn_the_target_task(algo, compose_cfg, tmp_path):
    """TargetEnv (tests/conftest.py): ignoring the target scores -1/3; a learned Gaussian mean scores near 0."""
    cfg = compose_cfg(
        f"algo={algo}",
        "env=pendulum",
        "env.id=TargetEnv-v0",
        "env.normalize_reward=false",
        "net.normalize_obs=false",
        "algo.num_steps=64",
        "total_timesteps=8192",
        "seed=1",
    )
    summary = train(cfg, tmp_path)
    assert summary["eval"]["mean"] > -0.1, summary["eval"]


@pytest.mark.parametrize("algo", ["ppo_clip", "trpo"])
def test_normalisation_options_run_on_pendulum(algo, compose_cfg, tmp_path):
    cfg = compose_cfg(
        f"algo={algo}",
        "env=pendulum",
        "env.normalize_reward=true",
        "net.normalize_obs=true",
        "algo.num_steps=256",
        "total_timesteps=2048",
        "eval_episodes=2",
    )
    summary = train(cfg, tmp_path)
    assert summary["total_env_steps"] == 2048 and -2000 < summary["eval"]["mean"] < 0

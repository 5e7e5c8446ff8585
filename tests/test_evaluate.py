"""python -m algos.evaluate and load_policy on saved runs of every env kind, and their bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from algos.evaluate import EvalSettings, evaluate, load_policy
from tests.test_learning import train

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "algos.evaluate", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("cartpole")
    train(compose_config("algo=ppo_clip", "env=cartpole", "total_timesteps=20000", "eval_episodes=2"), run_dir)
    return run_dir


def test_evaluate_plays_the_saved_agent_and_writes_every_episode(cartpole_run):
    result = evaluate(cartpole_run, EvalSettings(episodes=5))
    written = json.loads(next(cartpole_run.glob("eval-*.json")).read_text())
    assert written == result and len(result["returns"]) == len(result["lengths"]) == 5
    assert result["returns"] == [float(n) for n in result["lengths"]]  # CartPole pays 1 per step
    assert result["mean"] > 100  # the trained policy, not a fresh one (a random policy scores about 22)


def test_load_policy_runs_in_a_plain_gymnasium_loop(cartpole_run):
    policy = load_policy(cartpole_run)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    steps = 0
    while True:
        obs, _, terminated, truncated, _ = env.step(policy(obs))
        steps += 1
        if terminated or truncated:
            break
    assert steps > 100


def test_the_command_line_prints_one_line(cartpole_run):
    proc = cli(str(cartpole_run), "episodes=3", "deterministic=false", "seed=5")
    assert proc.returncode == 0, proc.stderr
    assert "ppo_clip on CartPole-v1: return" in proc.stdout and "over 3 episodes (stochastic" in proc.stdout


def test_normalised_observations_are_evaluated_with_the_saved_statistics(compose_cfg, tmp_path):
    train(
        compose_cfg(
            "algo=ppo_clip",
            "env=pendulum",
            "net.normalize_obs=true",
            "total_timesteps=2048",
            "algo.num_steps=256",
            "eval_episodes=1",
        ),
        tmp_path,
    )
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["agent"]
    agent = load_policy(tmp_path).agent
    assert saved["obs_normalizer.count"].item() > 1000
    assert torch.equal(agent.obs_normalizer.mean, saved["obs_normalizer.mean"])
    assert len(evaluate(tmp_path, EvalSettings(episodes=2))["returns"]) == 2


def test_an_atari_agent_is_evaluated(compose_cfg, tmp_path):
    train(
        compose_cfg(
            "algo=ppo_clip",
            "env=breakout",
            "env.num_envs=2",
            "algo.num_steps=32",
            "total_timesteps=64",
            "env.max_episode_frames=400",
            "eval_episodes=1",
        ),
        tmp_path,
    )
    result = evaluate(tmp_path, EvalSettings(episodes=1))
    assert result["env"] == "ALE/Breakout-v5" and result["lengths"][0] > 0


@pytest.fixture(scope="module")
def text_run(tiny_lm, tmp_path_factory) -> Path:
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("text")
    train(
        compose_config(
            "algo=ppo_clip",
            "env=text",
            "env.task=examples/terse_task.py:make_task",
            f"env.policy_model={tiny_lm}",
            "env.num_envs=4",
            "env.max_new_tokens=4",
            "env.max_prompt_tokens=8",
            "algo.num_steps=8",
            "total_timesteps=32",
            "eval_episodes=2",
        ),
        run_dir,
    )
    return run_dir


def test_a_text_run_is_evaluated_by_the_text_evaluator(text_run):
    proc = cli(str(text_run), "episodes=4")
    assert proc.returncode == 0, proc.stderr
    assert "| policy (this run) |" in proc.stdout and "best-of-4 (reference)" in proc.stdout


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "has no checkpoint.pt"),
        ("corrupt", "is not a readable checkpoint"),
        ("other algorithm", "is a checkpoint of a2c on CartPole-v1, but this run is ppo_clip"),
    ],
)
def test_a_missing_corrupt_or_foreign_checkpoint_exits_2(damage, message, cartpole_run, compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cartpole_run, run_dir)
    if damage == "missing":
        (run_dir / "checkpoint.pt").unlink()
    elif damage == "corrupt":
        whole = (run_dir / "checkpoint.pt").read_bytes()
        (run_dir / "checkpoint.pt").write_bytes(whole[: len(whole) // 2])  # a write cut short
    else:
        train(compose_cfg("algo=a2c", "env=cartpole", "total_timesteps=80", "eval_episodes=1"), tmp_path / "a2c")
        shutil.copy(tmp_path / "a2c" / "checkpoint.pt", run_dir / "checkpoint.pt")
    proc = cli(str(run_dir))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_video_of_an_env_that_cannot_render_exits_2(text_run):
    proc = cli(str(text_run), "capture_video=true")
    assert proc.returncode == 2 and "has no frames to record" in proc.stderr, proc.stderr


def test_a_folder_without_a_run_and_a_bad_setting_exit_2(cartpole_run, tmp_path):
    assert "has no config.yaml" in cli(str(tmp_path)).stderr
    proc = cli(str(cartpole_run), "episodes=0")
    assert proc.returncode == 2 and "episodes=0 must be > 0" in proc.stderr
    proc = cli(str(cartpole_run), "episode=3")
    assert proc.returncode == 2 and "unknown setting episode" in proc.stderr

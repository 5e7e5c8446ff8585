"""MuJoCo through the classic kind: the CleanRL preset composes, a short PPO run on normalised observations works,
and a missing extra is a clear error (exit 2)."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from envs.classic import make_single_env

REPO = Path(__file__).resolve().parent.parent


def test_the_mujoco_preset_is_cleanrls_ppo_continuous_action(compose_cfg):
    cfg = compose_cfg("algo=ppo_clip", "env=halfcheetah")
    assert (cfg.env.id, cfg.env.num_envs, cfg.env.normalize_reward, cfg.net.normalize_obs) == (
        "HalfCheetah-v5",
        1,
        True,
        True,
    )
    hp = cfg.algo
    assert (cfg.total_timesteps, hp.num_steps, hp.update_epochs, hp.num_minibatches, hp.learning_rate) == (
        1_000_000,
        2048,
        10,
        32,
        3e-4,
    )
    assert (hp.anneal_lr, hp.gamma, hp.gae_lambda, hp.clip_coef, hp.ent_coef, hp.vf_coef, hp.max_grad_norm) == (
        True,
        0.99,
        0.95,
        0.2,
        0.0,
        0.5,
        0.5,
    )


def test_a_short_ppo_run_on_hopper(compose_cfg, tmp_path):
    pytest.importorskip("mujoco", reason="the mujoco extra is not installed")
    from algos import ppo_clip

    cfg = compose_cfg("algo=ppo_clip", "env=hopper", "total_timesteps=2048", "algo.num_steps=512", "eval_episodes=1")
    summary = ppo_clip.train(cfg, tmp_path)
    assert summary["total_env_steps"] == 2048 and summary["env"] == "Hopper-v5"


def test_a_mujoco_env_without_the_extra_is_a_clear_error(monkeypatch):
    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`')

    monkeypatch.setattr(gym, "make", missing)
    with pytest.raises(Exception, match=r"pip install -e '\.\[mujoco\]'"):
        make_single_env("Hopper-v5")


def test_the_command_line_exits_2_when_mujoco_is_missing(tmp_path):
    """A fresh interpreter where importing mujoco fails, as on a machine without the extra."""
    code = (
        "import sys; sys.modules['mujoco'] = None; sys.argv = ['algos', 'algo=ppo_clip', 'env=hopper', "
        f"'hydra.run.dir={tmp_path}']; import tests.conftest; from algos.cli import main; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install -e '.[mujoco]'" in proc.stderr

"""benchmarks.sb3_peers: our settings translated to SB3 / sb3-contrib, and runs in our run-folder format."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

from benchmarks import report, sb3_peers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_ppo_clip_settings_become_sb3_ppo_arguments(compose_cfg):
    kwargs = sb3_peers.peer_kwargs(compose_cfg("algo=ppo_clip", "env=cartpole"))  # rl-zoo's tuned set
    assert {k: kwargs[k] for k in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef")} == {
        "n_steps": 32,
        "batch_size": 256,
        "n_epochs": 20,
        "gamma": 0.98,
        "gae_lambda": 0.8,
        "ent_coef": 0.0,
    }
    assert (kwargs["learning_rate"](1.0), kwargs["learning_rate"](0.5)) == pytest.approx((1e-3, 5e-4))  # annealed
    assert (kwargs["clip_range"](1.0), kwargs["clip_range"](0.25)) == pytest.approx((0.2, 0.05))
    assert kwargs["clip_range_vf"] is None and kwargs["policy_kwargs"]["optimizer_kwargs"] == {"eps": 1e-5}
    assert kwargs["policy_kwargs"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}


def test_a2c_and_trpo_settings_become_their_peers_arguments(compose_cfg):
    a2c = sb3_peers.peer_kwargs(compose_cfg("algo=a2c", "env=acrobot"))
    assert (a2c["n_steps"], a2c["learning_rate"], a2c["gae_lambda"]) == (5, 7e-4, 1.0)
    assert a2c["policy_kwargs"]["optimizer_class"] is torch.optim.RMSprop
    assert a2c["policy_kwargs"]["optimizer_kwargs"] == {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0}
    trpo = sb3_peers.peer_kwargs(compose_cfg("algo=trpo", "env=cartpole"))
    assert {k: trpo[k] for k in ("n_steps", "batch_size", "n_critic_updates", "target_kl", "cg_damping")} == {
        "n_steps": 512,
        "batch_size": 2048,
        "n_critic_updates": 10,
        "target_kl": 0.01,
        "cg_damping": 0.1,
    }


def test_atari_settings_become_sb3s_atari_stack(compose_cfg):
    """CleanRL's published PPO settings and our preprocessing reach SB3's PPO, AtariWrapper and VecFrameStack."""
    cfg = compose_cfg("algo=ppo_clip", "env=breakout")
    kwargs = sb3_peers.peer_kwargs(cfg)
    assert {k: kwargs[k] for k in ("n_steps", "batch_size", "n_epochs", "ent_coef", "vf_coef", "max_grad_norm")} == {
        "n_steps": 128,
        "batch_size": 256,
        "n_epochs": 4,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
    }
    assert (kwargs["clip_range"], kwargs["clip_range_vf"]) == (0.1, 0.1)
    assert kwargs["policy_kwargs"] == {"optimizer_kwargs": {"eps": 1e-5}}  # SB3's Nature CNN, no MLP settings
    envs = sb3_peers.make_peer_envs(cfg, 2, seed=0)
    assert envs.observation_space.shape == (84, 84, 4) and envs.action_space.n == 4
    assert envs.envs[0].unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    envs.close()
    with pytest.raises(sb3_peers.PeerError, match="fire_on_life_loss=true"):
        sb3_peers.check_matchable(compose_cfg("algo=ppo_clip", "env=breakout", "env.fire_on_life_loss=false"))


def test_mujoco_normalisation_becomes_vecnormalize_frozen_for_evaluation(compose_cfg):
    pytest.importorskip("mujoco")
    from stable_baselines3.common.vec_env import VecNormalize

    cfg = compose_cfg("algo=ppo_clip", "env=hopper")  # CleanRL's ppo_continuous_action settings
    kwargs = sb3_peers.peer_kwargs(cfg)
    assert (kwargs["n_steps"], kwargs["batch_size"], kwargs["n_epochs"], kwargs["ent_coef"]) == (2048, 64, 10, 0.0)
    envs = sb3_peers.make_peer_envs(cfg, 1, seed=0)
    assert isinstance(envs, VecNormalize) and envs.norm_obs and envs.norm_reward
    assert (envs.clip_obs, envs.clip_reward, envs.gamma) == (10.0, np.inf, 0.99)
    model = sb3_peers.make_peer(cfg, envs)
    envs.reset()
    for _ in range(5):
        envs.step(np.zeros((1, 3), dtype=np.float32))
    evaluation = sb3_peers.frozen_normalisation(model, sb3_peers.make_peer_envs(cfg, 2, seed=1))
    assert evaluation.obs_rms is envs.obs_rms and not evaluation.training and not evaluation.norm_reward
    envs.close()
    evaluation.close()


def test_a_peer_run_has_our_folder_format_and_tags(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.sb3_peers",
            "algo=ppo_clip",
            "env=cartpole",
            "total_timesteps=1024",
            "eval_episodes=2",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["algo"], summary["env"], summary["total_env_steps"]) == ("sb3_ppo", "CartPole-v1", 1024)
    assert summary["eval"]["episodes"] == 2 and summary["peer"]["class"] == "PPO"
    run = report.read_run(tmp_path)
    assert run.problem is None, run.problem
    assert {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/mean_return"} <= run.tags
    assert run.episodes[0][-1] <= 1024


def test_an_algorithm_without_a_peer_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.sb3_peers", "algo=pg", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "no SB3 peer for algo=pg; peers exist for: a2c, ppo_clip, trpo" in out.stderr

"""Atari (envs/atari.py): ale-py's vector env against gymnasium's Python wrappers, the preprocessing contract, short
PPO runs through the algorithm file, exact repeats and bad input."""

import importlib
import json
import logging
import re

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from algos import a2c, ppo_clip
from core.errors import ConfigError
from envs import check_env_settings, make_vector_env
from envs.atari import ale_game, python_single_env
from tests.conftest import compose_config


def atari_env_cfg(*overrides: str):
    return check_env_settings(compose_config("env=atari", *overrides).env)


def play(envs, steps: int, seed: int = 0):
    """Step `envs` with a fixed random action sequence; yields each step's results."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield envs.step(rng.integers(0, envs.single_action_space.n, envs.num_envs))


def test_vector_env_matches_gymnasium_python_wrappers():
    """Same actions, same observations (every step, final ones included), rewards and terminations as
    AtariPreprocessing + FrameStackObservation (the stack capture_video records through); no-ops are off, their
    random counts come from different RNGs."""
    pytest.importorskip("cv2", reason="AtariPreprocessing needs opencv (the bench and video extras install it)")
    env_cfg = atari_env_cfg("env.noop_max=0", "env.fire_on_life_loss=false")
    ours = make_vector_env(env_cfg, 2, training=False)
    theirs = SyncVectorEnv(
        [lambda: python_single_env(env_cfg) for _ in range(2)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    obs_ours, _ = ours.reset(seed=5)
    obs_theirs, _ = theirs.reset(seed=5)
    assert np.array_equal(obs_ours, obs_theirs)
    games_over = 0
    for a, b in zip(play(ours, 500), play(theirs, 500)):
        for x, y in zip(a[:4], b[:4]):
            assert np.array_equal(x, y)
        if a[2].any():
            games_over += a[2].sum()
            done = np.flatnonzero(a[2])
            assert np.array_equal(a[4]["final_obs"][done], np.stack(b[4]["final_obs"][done]))
    assert games_over >= 2  # autoreset was compared too


def test_observations_are_stacked_uint8_frames_oldest_first():
    envs = make_vector_env(atari_env_cfg(), 3, training=True)
    obs, _ = envs.reset(seed=1)
    assert envs.single_observation_space.shape == (4, 84, 84) and obs.shape == (3, 4, 84, 84)
    assert obs.dtype == np.uint8 and envs.single_observation_space.dtype == np.uint8
    assert not obs[:, :3].any() and obs[:, 3].any()  # a game starts from zero frames and its first frame
    for next_obs, _, terminated, truncated, _ in play(envs, 20):
        ongoing = ~(terminated | truncated)
        assert np.array_equal(next_obs[ongoing, :3], obs[ongoing, 1:])  # the newest frame is appended last
        obs = next_obs


def test_training_reward_is_clipped_and_lives_end_episodes_while_the_logged_score_is_raw():
    """The same games played by a training env and an evaluation env: training sees sign(reward) and an episode
    end at each lost life, with the game going on; both log the raw score of the whole game."""
    cfg = atari_env_cfg("env.id=ALE/SpaceInvaders-v5")
    train_envs, eval_envs = make_vector_env(cfg, 2, training=True), make_vector_env(cfg, 2, training=False)
    train_envs.reset(seed=3)
    eval_envs.reset(seed=3)
    raw_sum, clipped_sum, lives_lost, games = np.zeros(2), np.zeros(2), 0, 0
    for (_, r_train, term_train, _, info_train), (_, r_eval, term_eval, trunc_eval, info_eval) in zip(
        play(train_envs, 1500), play(eval_envs, 1500)
    ):
        assert np.array_equal(r_train, np.sign(r_eval))
        life_lost = term_train & ~term_eval
        lives_lost += life_lost.sum()
        assert (info_train["lives"][life_lost] > 0).all()  # the game goes on after a lost life
        raw_sum += r_eval
        clipped_sum += r_train
        if "final_info" in info_eval:
            done = info_eval["final_info"]["_episode"]
            assert np.array_equal(done, term_eval | trunc_eval)
            for info in (info_eval, info_train):
                assert np.array_equal(info["final_info"]["_episode"], done)
                assert np.allclose(info["final_info"]["episode"]["r"][done], raw_sum[done])
            assert (raw_sum[done] > clipped_sum[done]).all()  # invaders score 5 to 30 points each
            games += done.sum()
            raw_sum[done] = clipped_sum[done] = 0
    assert lives_lost >= 2 and games >= 1


@pytest.mark.parametrize("fire_on_life_loss", [True, False])
def test_fire_after_a_lost_life_relaunches_the_ball(fire_on_life_loss):
    """A policy that never fires loses all five Breakout lives only if FIRE follows each lost life; otherwise the
    ball waits after the first lost life until the game is cut at max_episode_frames."""
    cfg = atari_env_cfg(f"env.fire_on_life_loss={fire_on_life_loss}", "env.max_episode_frames=4000")
    envs = make_vector_env(cfg, 1, training=False)
    envs.reset(seed=1)
    for _ in range(1000):
        _, _, terminated, truncated, _ = envs.step(np.zeros(1, dtype=np.int64))
        if terminated[0] or truncated[0]:
            break
    assert (terminated[0], truncated[0]) == ((True, False) if fire_on_life_loss else (False, True))


def ppo_config(tmp_path, *overrides: str):
    return compose_config(
        "algo=ppo_clip",
        "env=breakout",
        "eval_episodes=2",
        "env.max_episode_frames=2000",
        f"run_root={tmp_path}",
        *overrides,
    )


def test_short_ppo_run_on_breakout_completes_and_writes_its_summary(tmp_path):
    cfg = ppo_config(tmp_path, "total_timesteps=2048")
    assert (cfg.algo.num_steps, cfg.algo.clip_coef, cfg.algo.clip_vloss, cfg.env.num_envs) == (128, 0.1, True, 8)
    summary = ppo_clip.train(cfg, tmp_path)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["env"] == "ALE/Breakout-v5" and summary["total_env_steps"] == 2048
    assert summary["eval"]["episodes"] == 2 and all(r >= 0 for r in summary["eval"]["returns"])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["meta"]["global_step"] == 2048


def test_same_seed_repeats_exactly(tmp_path):
    cfg = ppo_config(tmp_path, "total_timesteps=512", "env.num_envs=4", "algo.num_steps=32")
    first, second = ppo_clip.train(cfg, tmp_path / "a"), ppo_clip.train(cfg, tmp_path / "b")
    assert first["eval"]["returns"] == second["eval"]["returns"]
    params = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["agent"] for d in "ab"]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])


def test_a_run_resumes_from_its_checkpoint_with_new_games(tmp_path, caplog):
    """ale-py cannot save its emulators: the resumed run restarts its games and carries on from the checkpoint."""
    small = ["env.num_envs=4", "algo.num_steps=32"]
    ppo_clip.train(ppo_config(tmp_path, "total_timesteps=256", *small), tmp_path)
    with caplog.at_level(logging.INFO, logger="tokengym"):
        summary = ppo_clip.train(ppo_config(tmp_path, "total_timesteps=512", *small), tmp_path)
    assert "from update 2 (environment step 256)" in caplog.text
    assert summary["total_env_steps"] == 512


def test_a2c_preset_runs_on_pong(tmp_path):
    cfg = compose_config(
        "algo=a2c",
        "env=pong",
        "total_timesteps=160",
        "eval_episodes=1",
        "env.max_episode_frames=400",
        f"run_root={tmp_path}",
    )
    assert (cfg.env.num_envs, cfg.algo.num_steps, cfg.algo.vf_coef, cfg.algo.ent_coef) == (16, 5, 0.25, 0.01)
    assert a2c.train(cfg, tmp_path)["total_env_steps"] == 160


@pytest.mark.parametrize("algo", ["trpo", "pg", "ppo_penalty"])
def test_the_algorithms_without_atari_presets_run_on_breakout(algo, tmp_path):
    cfg = compose_config(
        f"algo={algo}",
        "env=breakout",
        "env.num_envs=2",
        "algo.num_steps=32",
        "total_timesteps=128",
        "eval_episodes=1",
        "env.max_episode_frames=400",
    )
    summary = importlib.import_module(f"algos.{algo}").train(cfg, tmp_path)
    assert summary["total_env_steps"] == 128 and summary["eval"]["episodes"] == 1


@pytest.mark.parametrize(
    "env_id, message",
    [
        ("ALE/Breakout-v9", "env.id='ALE/Breakout-v9' is not an Atari game id; close matches: ALE/Breakout-v5"),
        ("ALE/SpaceInvader-v5", "close matches: ALE/SpaceInvaders-v5"),
        ("CartPole-v1", "env.id='CartPole-v1' is not an Atari game id"),
    ],
)
def test_unknown_game_id_lists_close_matches(env_id, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ale_game(env_id)


def test_missing_rom_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ALE_ROMS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"the ROM of ALE/Pong-v5 \(pong\.bin\) is missing or unreadable"):
        ale_game("ALE/Pong-v5")

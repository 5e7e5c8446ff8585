"""capture_video=true: one greedy evaluation episode recorded as MP4 in the run folder (classic control, Atari)."""

import numpy as np
import pytest
import torch

from algos.networks import make_agent
from algos.ppo_clip import Hyperparameters
from algos.settings import NetSettings, check_config
from core.errors import ConfigError
from envs import check_env_settings, make_video_env
from tests.test_learning import train

pytest.importorskip("moviepy", reason="capture_video needs moviepy (the video extra installs it)")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


DROPPED = 2  # moviepy's writer can lose the last frame or two (it rounds the clip's duration)


def video_frames(path) -> int:
    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]  # decodes every frame: exact


def test_a_run_with_capture_video_leaves_an_mp4_of_one_evaluation_episode(compose_cfg, tmp_path):
    summary = train(
        compose_cfg("algo=ppo_clip", "env=cartpole", "total_timesteps=2048", "eval_episodes=1", "capture_video=true"),
        tmp_path,
    )
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["eval-episode-0.mp4"]
    # the greedy policy and the evaluation's first episode start from the same seed: same episode, same length
    # (CartPole: return = steps), + the reset frame, - up to DROPPED
    frames = summary["eval"]["returns"][0] + 1
    assert frames - DROPPED <= video_frames(videos[0]) <= frames


def test_an_atari_video_holds_every_emulator_frame_of_one_whole_game(compose_cfg, tmp_path):
    pytest.importorskip("cv2", reason="the recorded game runs through AtariPreprocessing, which needs opencv")
    cfg = compose_cfg("env=atari", "env.noop_max=0", "capture_video=true")
    folder = tmp_path / "videos"  # fresh, so RecordVideo has nothing to overwrite
    envs = make_video_env(check_env_settings(cfg.env), str(folder))
    agent = make_agent(envs.single_observation_space, envs.single_action_space, NetSettings(**cfg.net))
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = 0
    while True:
        obs, _, _, _, info = envs.step(
            rng.integers(0, envs.single_action_space.n, 1)
            if steps % 2
            else agent.greedy_action(torch.as_tensor(obs)).numpy()
        )
        steps += 1
        if "episode" in info.get("final_info", {}):
            break
    envs.close()
    lives = 5
    assert info["final_info"]["episode"]["l"][0] == steps > lives  # a whole game, all lives, not one life
    # reset frame + FIRE at the game's start + frame_skip frames per agent step, but the last step's frame skip
    # stops at the game's end; - up to DROPPED
    skip = cfg.env.frame_skip
    assert 2 + skip * (steps - 1) - DROPPED < video_frames(folder / "eval-episode-0.mp4") <= 2 + skip * steps


def test_capture_video_on_an_env_without_frames_is_refused_before_training(compose_cfg):
    with pytest.raises(ConfigError, match="env.kind=text has no frames to record.*set capture_video=false"):
        check_config(compose_cfg("env=text_sentiment", "capture_video=true"), Hyperparameters)

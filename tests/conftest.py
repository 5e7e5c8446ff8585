"""Shared fixtures: configs composed from conf/ exactly as the command line composes them."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from algos.registry import store_algorithm_defaults

CONF = str(Path(__file__).resolve().parent.parent / "conf")
store_algorithm_defaults()


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


class TargetEnv(gym.Env):
    """One-step continuous task: observe a target in [-1, 1], reward -(action - target)^2.
    A policy that ignores the target scores -1/3 on average; a learned one scores near 0."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-2, 2, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self.target, {}

    def step(self, action):
        return self.target, -float(((action - self.target) ** 2).sum()), True, False, {}


if "TargetEnv-v0" not in gym.registry:
    # gymnasium's EnvCreator protocol asks for a callable taking **kwargs; the class takes none, and none are given
    gym.register(id="TargetEnv-v0", entry_point=TargetEnv)  # type: ignore[arg-type]


@pytest.fixture
def compose_cfg():
    return compose_config


class NaNRewardAfter(gym.Wrapper):
    """CartPole whose reward turns NaN after `after` steps of this environment (a broken reward function)."""

    def __init__(self, env, after=600):
        super().__init__(env)
        self.after, self.steps = after, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, float("nan") if self.steps > self.after else reward, terminated, truncated, info


if "NaNRewardCartPole-v0" not in gym.registry:
    gym.register(
        id="NaNRewardCartPole-v0",
        entry_point=lambda **kw: NaNRewardAfter(gym.make("CartPole-v1").unwrapped, **kw),
        max_episode_steps=500,
    )


def make_tiny_lm(folder: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer, saved with save_pretrained (benchmarks/text_speed.py)."""
    from benchmarks.text_speed import build_tiny_model

    return Path(build_tiny_model(folder))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_classifier(tiny_lm, tmp_path_factory) -> Path:
    """A one-label sequence classifier on the tiny LM's tokenizer (a stand-in reward model), head seeded."""
    from transformers import AutoTokenizer

    from envs.text.pipeline.reward_model import initial_reward_model

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tiny-classifier")
    initial_reward_model(tiny_lm).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder)
    return folder

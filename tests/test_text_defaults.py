"""The text env without arguments and a task without a model: both run on the project's default models, offline.

The default models are the ones `ensure_text_models` builds and caches (minutes); here the cache is laid out in a
temporary folder with the tiny test models under the default settings' folder name, so the real lookup is tested.
"""

import json
import shutil

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from envs.text.pipeline.cache import cache_folder
from envs.text.pipeline.settings import TextModelSettings
from envs.text.tasks import load_task, policy_model_of


@pytest.fixture
def default_models(tiny_lm, tiny_classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = cache_folder(TextModelSettings(), None)
    shutil.copytree(tiny_lm, folder / "base_lm")
    shutil.copytree(tiny_classifier, folder / "reward_model")
    (folder / "metrics.json").write_text(json.dumps({}))
    return folder


def test_the_registered_env_without_a_task_is_the_default_task_and_passes_gymnasiums_checker(default_models):
    # "module:id" imports the module that registers the id. The tiny test tokenizer splits words into characters,
    # so the review openings need more than the default model's 24 prompt tokens (and its context is 64).
    env = gym.make("envs.text.env:tokengym/Text-v0", disable_env_checker=True, max_prompt_tokens=56, max_new_tokens=8)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert env.unwrapped.observation_space.policy_model == str(default_models / "base_lm")
    assert "ref_logprob" in info


def test_a_task_without_a_model_runs_on_the_default_base_lm(default_models):
    task = load_task("examples/terse_task.py:make_task", None)
    assert task.default_policy_model is None
    assert policy_model_of(task, None) == str(default_models / "base_lm")
    assert policy_model_of(task, "some/folder") == "some/folder"

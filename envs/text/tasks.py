"""Text tasks: a source of prompts plus a reward of (prompt, completion). A task plugs in from the user's own
file with no edit to project code:

    # my_task.py
    from envs.text.tasks import TextTask

    def make_task(settings):  # the env's checked settings (envs/text/env.py, Settings)
        return TextTask(name="exclaim", prompts=["the movie was", "i think"],
                        reward=lambda prompt, completion: completion.count("!"))

    python -m algos algo=ppo_clip env=text env.task=my_task.py:make_task env.policy_model=<name or folder>
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.checks import require
from core.errors import ConfigError, NonFiniteError

PerCompletion = Callable[[str, str], float]
Batched = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class TextTask:
    """`reward(prompt, completion) -> float`, or `batch_reward(prompts, completions) -> scores` for scorers
    that are faster on batches (a reward model). `gold`, batched, is a second scorer kept apart from the
    reward and only logged (text/gold_reward), so over-optimisation of the reward shows."""

    name: str
    prompts: list[str]
    reward: PerCompletion | None = None
    batch_reward: Batched | None = None
    gold: Batched | None = None
    default_policy_model: str | None = None
    reward_model: str | None = None  # folder of the learned reward model behind batch_reward, if it is one
    corpus: list[str] | None = None
    heldout_corpus: list[str] | None = None
    models: list[Any] = field(default_factory=list)  # torch modules the rewards run: the env puts them on its device

    def __post_init__(self):
        require(
            (self.reward is None) != (self.batch_reward is None),
            f"task {self.name!r}: give exactly one of reward (per completion) and batch_reward",
        )
        self.prompts = list(self.prompts)

    def score(self, prompts: list[str], completions: list[str]) -> Sequence[float]:
        if self.batch_reward is not None:
            return self.batch_reward(prompts, completions)
        assert self.reward is not None  # __post_init__ requires exactly one of reward and batch_reward
        return [self.reward(p, c) for p, c in zip(prompts, completions)]

    def checked_scores(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """`score`, checked: a reward function that raises is a ConfigError naming the task and the input, one
        that returns the wrong shape too, and a non-finite score a NonFiniteError naming the completion."""
        try:
            scores = np.asarray(self.score(prompts, completions), dtype=np.float64)
        except Exception as err:  # a user's reward function: report which task and input, then stop
            raise ConfigError(
                f"the reward of task {self.name!r} raised {type(err).__name__}: {err} on prompt {prompts[0]!r}, "
                f"completion {completions[0]!r}; fix the reward function"
            ) from err
        require(
            scores.shape == (len(prompts),),
            f"the reward of task {self.name!r} returned shape {scores.shape} for {len(prompts)} completions; "
            f"return one number per completion",
        )
        if not np.isfinite(scores).all():
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise NonFiniteError(
                f"the reward of task {self.name!r} returned {scores[bad]} for prompt {prompts[bad]!r}, "
                f"completion {completions[bad]!r}"
            )
        return scores


# env.task name -> "module:factory" of a built-in task, imported only when named (as envs/__init__.py's KINDS are)


def policy_model_of(task: TextTask, override: str | None) -> str:
    """The policy's model: env.policy_model where set, else the task's own default, else the project's default base
    LM (envs/text/pipeline, built and cached on first use), so that a task without a model runs offline."""
    if override:
        return override
    if task.default_policy_model:
        return task.default_policy_model
    from envs.text.pipeline.cache import ensure_text_models

    return str(ensure_text_models().base_lm)


TASKS = {"sentiment": "envs.text.sentiment:sentiment_task"}


def load_task(spec: str, settings: Any) -> TextTask:
    """A built-in task's name (TASKS), or `path/to/file.py:factory` / `package.module:factory`, where factory is
    a TextTask or a function of the env's checked settings (envs/text/env.py, Settings) returning one."""
    if spec in TASKS:
        task = _from_factory(TASKS[spec], settings)
    elif ":" in spec:
        task = _from_factory(spec, settings)
    else:
        raise ConfigError(
            f"env.task={spec!r} is not a registered task ({', '.join(sorted(TASKS))}) nor "
            f"'file.py:factory' / 'module:factory'"
        )
    require(isinstance(task, TextTask), f"env.task={spec!r} gave {type(task).__name__}, not a TextTask")
    return task


def _from_factory(spec: str, settings: Any) -> Any:
    where, name = spec.rsplit(":", 1)
    module = _import_file(Path(where)) if where.endswith(".py") else _import_module(where, spec)
    if not hasattr(module, name):
        raise ConfigError(f"env.task={spec!r}: {where} defines no {name!r}")
    factory = getattr(module, name)
    return factory if isinstance(factory, TextTask) else factory(settings)


def _import_file(path: Path):
    if not path.is_file():
        raise ConfigError(f"env.task: there is no file {path.resolve()}; give the path of your task's .py file")
    spec = importlib.util.spec_from_file_location(f"tokengym_task_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file gets a source-file loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"env.task={spec!r}: cannot import module {name!r} ({err})") from None

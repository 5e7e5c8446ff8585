"""The default text task: continue the opening words of a movie review so that the learned reward model
(trained from ranked comparisons, envs/text/pipeline/reward_model.py) scores it as positive; VADER is the gold
scorer. Named `sentiment` in envs/text/tasks.py's TASKS."""

from __future__ import annotations

import random

import torch

from envs.text.gold import gold_scores
from envs.text.loading import load_reward_model
from envs.text.pipeline.cache import ensure_text_models, split_corpus
from envs.text.pipeline.reward_model import reward_scores, split_prompt
from envs.text.pipeline.settings import TextModelSettings
from envs.text.tasks import TextTask

NUM_PROMPTS = 2000


def sentiment_task(settings) -> TextTask:
    """The task on the default models (built on first use, envs/text/pipeline/cache.py); `settings`, the env's,
    changes nothing here."""
    model_settings = TextModelSettings()
    paths = ensure_text_models(model_settings)
    reward_model, reward_tokenizer = load_reward_model(paths.reward_model)
    held_in, held_out = split_corpus(model_settings)
    usable = [s.text for s in held_in if len(s.text.split()) > model_settings.prompt_words]
    prompts = [
        split_prompt(text, model_settings.prompt_words)[0]
        for text in random.Random(0).sample(usable, min(NUM_PROMPTS, len(usable)))
    ]

    @torch.no_grad()
    def proxy_reward(prompts: list[str], completions: list[str]) -> list[float]:
        return reward_scores(reward_model, reward_tokenizer, [p + c for p, c in zip(prompts, completions)]).tolist()

    def gold_reward(prompts: list[str], completions: list[str]) -> list[float]:
        return gold_scores([p + c for p, c in zip(prompts, completions)]).tolist()

    return TextTask(
        name="sentiment",
        prompts=prompts,
        batch_reward=proxy_reward,
        gold=gold_reward,
        default_policy_model=str(paths.base_lm),
        reward_model=str(paths.reward_model),
        corpus=[s.text for s in held_in],
        heldout_corpus=[s.text for s in held_out],
        models=[reward_model],
    )

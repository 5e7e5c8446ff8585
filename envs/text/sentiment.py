"""The default text task: continue the opening words of a movie review so that the learned reward model
(trained from ranked comparisons, envs/text/reward_model.py) scores it as positive; VADER is the gold scorer."""

from __future__ import annotations

import random

import torch

from envs.text.tasks import TextTask, register_task

NUM_PROMPTS = 2000


@register_task("sentiment")
def sentiment_task(env_cfg) -> TextTask:
    from envs.text.cache import ensure_text_models, split_corpus
    from envs.text.gold import gold_scores
    from envs.text.loading import load_reward_model
    from envs.text.reward_model import reward_scores, split_prompt
    from envs.text.settings import TextModelSettings

    settings = TextModelSettings()
    paths = ensure_text_models(settings)
    reward_model, reward_tokenizer = load_reward_model(paths.reward_model)
    held_in, held_out = split_corpus(settings)
    usable = [s.text for s in held_in if len(s.text.split()) > settings.prompt_words]
    prompts = [split_prompt(text, settings.prompt_words)[0]
               for text in random.Random(0).sample(usable, min(NUM_PROMPTS, len(usable)))]

    @torch.no_grad()
    def proxy_reward(prompts: list[str], completions: list[str]) -> list[float]:
        return reward_scores(reward_model, reward_tokenizer, [p + c for p, c in zip(prompts, completions)]).tolist()

    def gold_reward(prompts: list[str], completions: list[str]) -> list[float]:
        return gold_scores([p + c for p, c in zip(prompts, completions)]).tolist()

    return TextTask(name="sentiment", prompts=prompts, batch_reward=proxy_reward, gold=gold_reward,
                    default_policy_model=str(paths.base_lm), reward_model=str(paths.reward_model),
                    corpus=[s.text for s in held_in], heldout_corpus=[s.text for s in held_out])

"""Sampling completions from a causal LM as the text env's episodes start them, and scoring them with a task's
reward: what the evaluator (envs/text/evaluate.py) and vBoN's reference pools (envs/text/quantile.py) share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.text.tasks import TextTask
from envs.text.tokens import left_padded

GENERATE_ROWS = 2048  # sequences per `generate` call (its KV cache grows with them)
SCORE_ROWS = 1024  # texts per call of the task's reward


@dataclass
class Samples:
    prompts: list[str]
    completions: list[str]
    token_ids: list[list[int]]  # prompt + completion ids (with EOS if generated)
    prompt_lengths: list[int]

    def rows(self, chosen: list[int]) -> Samples:
        return Samples(
            [self.prompts[i] for i in chosen],
            [self.completions[i] for i in chosen],
            [self.token_ids[i] for i in chosen],
            [self.prompt_lengths[i] for i in chosen],
        )


def sample(lm, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> Samples:
    """`n` completions per prompt (prompt by prompt: the n of prompt i are rows i*n .. i*n + n - 1), sampled at
    temperature 1 (no top-k/top-p), batched with left padding, at most GENERATE_ROWS sequences per call."""
    per_call = max(1, GENERATE_ROWS // n)
    result = Samples([], [], [], [])
    for first in range(0, len(prompts), per_call):
        part = _sample_batch(lm, tokenizer, prompts[first : first + per_call], n, max_new_tokens)
        for field in ("prompts", "completions", "token_ids", "prompt_lengths"):
            getattr(result, field).extend(getattr(part, field))
    return result


@torch.no_grad()
def _sample_batch(lm, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> Samples:
    """One `generate` call; each sequence starts as an episode of the environment does (envs/text/tokens.py)."""
    encoded, ids, mask, pad = left_padded(tokenizer, prompts)
    width = ids.shape[1]
    device = next(lm.parameters()).device
    out = lm.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )
    result = Samples([], [], [], [])
    for i, row in enumerate(out.tolist()):
        prompt_ids = encoded[i // n]
        generated = row[width:]
        if tokenizer.eos_token_id in generated:
            generated = generated[: generated.index(tokenizer.eos_token_id) + 1]
        result.prompts.append(prompts[i // n])
        result.completions.append(
            tokenizer.decode([t for t in generated if t != tokenizer.eos_token_id], skip_special_tokens=True)
        )
        result.token_ids.append(prompt_ids + generated)
        result.prompt_lengths.append(len(prompt_ids))
    return result


def proxy_scores(task: TextTask, prompts: list[str], completions: list[str]) -> np.ndarray:
    """The task's reward of each (prompt, completion), each distinct pair scored once (so that repeated
    completions carry exactly the same reward), SCORE_ROWS pairs per call."""
    distinct = list(dict.fromkeys(zip(prompts, completions)))
    scores: list[float] = []
    for first in range(0, len(distinct), SCORE_ROWS):
        part = distinct[first : first + SCORE_ROWS]
        scores += [float(s) for s in task.score([p for p, _ in part], [c for _, c in part])]
    by_pair = dict(zip(distinct, scores))
    return np.array([by_pair[pair] for pair in zip(prompts, completions)], dtype=float)

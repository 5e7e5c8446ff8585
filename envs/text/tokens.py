"""Token ids as the environment, the agent, the evaluator and the model pipeline all read them: the padding of
an observation, and the one way a prompt becomes ids."""

from __future__ import annotations

import torch

PAD = -1  # observation positions not yet filled


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """`<bos>` + the prompt's ids, with no other special token (no `<bos>` for a tokenizer without one): how a
    sentence starts in the base LM's pre-training, so an episode, an evaluation sample and a base-LM sample all
    start as the LM saw text start."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def left_padded(tokenizer, prompts: list[str]) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, int]:
    """(encoded prompts, left-padded ids, attention mask, pad id) for batched `generate`: every prompt ends in
    the last column, so generation continues all of them at once. Pads with the pad token, else EOS."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(map(len, encoded))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    return encoded, ids, mask, pad

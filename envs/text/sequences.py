"""A text task's corpus as whole-sequence data for algo=seqgan (the `text` kind's sequence_task, envs/text/env.py):
sentences tokenized with the policy model's tokenizer, cut or padded with EOS to env.max_prompt_tokens +
env.max_new_tokens tokens, generated from EOS (GPT-2's BOS). Generators are judged by BLEU-4 against held-out
sentences, self-BLEU-4 and distinct-n."""

from __future__ import annotations

import random

import torch

from core.checks import require
from envs.sequences import BleuReferences, SequenceTask, diversity_metrics
from envs.text.tasks import TextTask, policy_model_of

BLEU_HYPOTHESES = 500  # generated sentences scored against the held-out ones per evaluation


def text_sequence_task(task: TextTask, policy_model: str | None, length: int) -> SequenceTask:
    """Sequences of `length` tokens, split by the tokenizer of `policy_model` (None: tasks.policy_model_of's),
    which the transformer generator also starts from."""
    from envs.text.loading import load_tokenizer

    model = policy_model_of(task, policy_model)
    tokenizer = load_tokenizer(model)
    train_texts, heldout_texts = corpus_split(task)
    eos = tokenizer.eos_token_id
    real = torch.tensor([fixed_length(tokenizer(t).input_ids, length, eos) for t in train_texts])
    references = BleuReferences([tokenizer(t).input_ids[:length] for t in heldout_texts])

    def until_eos(samples: torch.Tensor) -> list[list[int]]:
        return [row[: row.index(eos)] if eos in row else row for row in samples.tolist()]

    def metrics(samples: torch.Tensor) -> dict[str, float]:
        sentences = [s for s in until_eos(samples) if s]
        return {"bleu4": references.mean_bleu(sentences[:BLEU_HYPOTHESES]), **diversity_metrics(sentences)}

    return SequenceTask(
        name=task.name,
        real=real,
        vocab_size=len(tokenizer),
        start_token=eos,
        metrics=metrics,
        headline="bleu4",
        lower_is_better=False,
        num_eval=2 * BLEU_HYPOTHESES,
        decode=lambda samples: tokenizer.batch_decode(until_eos(samples)),
        pretrained_generator=str(model),
    )


def corpus_split(task: TextTask) -> tuple[list[str], list[str]]:
    texts = task.corpus or task.prompts
    require(
        len(texts) >= 2,
        f"task {task.name!r} has {len(texts)} sentence(s) of corpus (or prompts); "
        f"algo=seqgan needs at least 2, some to train on and some to hold out",
    )
    if task.heldout_corpus:
        return list(texts), list(task.heldout_corpus)
    shuffled = random.Random(0).sample(list(texts), len(texts))
    cut = max(1, len(shuffled) // 10)
    return shuffled[cut:], shuffled[:cut]


def fixed_length(ids: list[int], length: int, eos: int) -> list[int]:
    """The first length - 1 tokens, then EOS up to `length` (every sequence ends with at least one EOS)."""
    ids = ids[: length - 1]
    return ids + [eos] * (length - len(ids))

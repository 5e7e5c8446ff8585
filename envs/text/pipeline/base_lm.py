"""Stage 1 (InstructGPT, at laptop scale): a byte-level BPE tokenizer and a small GPT-2 pre-trained on sentences.

Every sentence is one sequence `<bos> tokens <eos>` starting at position 0, as a prompt will be in the text
environment. The model minimises the next-token loss  L = -1/N sum_t log p(x_t | x_<t)  over real tokens
(padding excluded); held-out perplexity is exp(L) on sentences never trained on.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from envs.text.pipeline.settings import TextModelSettings
from envs.text.tokens import left_padded

log = logging.getLogger("tokengym.text")

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def train_tokenizer(texts: list[str], vocab_size: int, context_length: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2's scheme: any string encodes, decode(encode(s)) == s) with <pad>, <bos>, <eos> as
    ids 0, 1, 2. Calling the tokenizer adds <bos> and <eos> around the text; add_special_tokens=False does not."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        add_bos_token=True,
        add_eos_token=True,
        model_max_length=context_length,
    )


def build_language_model(tokenizer: PreTrainedTokenizerFast, settings: TextModelSettings) -> GPT2LMHeadModel:
    """A GPT-2 with tied input/output embeddings and no dropout, so that a policy trained from it gives the
    same log-probabilities in rollouts (eval mode) and in updates (train mode)."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=settings.context_length,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def encode_sentences(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    """`<bos> text <eos>` ids per sentence, cut to the model's context length."""
    return tokenizer(texts, truncation=True)["input_ids"]


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the attention mask (1 on real tokens)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def length_bucketed_batches(
    sequences: list[list[int]], batch_size: int, rng: random.Random
) -> Iterator[list[list[int]]]:
    """Batches of sentences of similar length (little padding), in random order; lengths are jittered so that
    batches differ between epochs."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]) + rng.random() * 4)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    for batch in batches:
        yield [sequences[i] for i in batch]


def warmup_cosine(step: int, total_steps: int, warmup_fraction: float = 0.05, floor: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay from 1 to `floor`."""
    warmup = max(1, int(total_steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def next_token_nll(model: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of -log p(x_t | x_<t) over the real tokens after the first, and how many there are."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets, target_mask = ids[:, 1:], mask[:, 1:].bool()
    nll = F.cross_entropy(logits[target_mask], targets[target_mask], reduction="sum")
    return nll, int(target_mask.sum())


def train_language_model(
    model: GPT2LMHeadModel, sequences: list[list[int]], pad_id: int, settings: TextModelSettings
) -> None:
    """AdamW on the mean next-token loss for `lm_epochs` passes, with a warm-up-cosine rate and grad-norm clip 1."""
    rng = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(sequences) / settings.lm_batch_size)
    total_steps = steps_per_epoch * settings.lm_epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lm_learning_rate, betas=(0.9, 0.95), weight_decay=0.01
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
    model.train()
    step, tokens, start = 0, 0, time.perf_counter()
    for epoch in range(settings.lm_epochs):
        for batch in length_bucketed_batches(sequences, settings.lm_batch_size, rng):
            ids, mask = pad_batch(batch, pad_id)
            nll, count = next_token_nll(model, ids, mask)
            loss = nll / count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step, tokens = step + 1, tokens + count
            if step % max(1, total_steps // 10) == 0:
                log.info(
                    "LM step %d/%d (epoch %d) loss %.3f, %.0f tokens/s",
                    step,
                    total_steps,
                    epoch + 1,
                    loss.item(),
                    tokens / (time.perf_counter() - start),
                )
    model.eval()


@torch.no_grad()
def heldout_perplexity(model: GPT2LMHeadModel, sequences: list[list[int]], pad_id: int, batch_size: int = 64) -> float:
    """exp of the mean next-token loss per token over held-out sentences (each from its own <bos>)."""
    model.eval()
    total_nll, total_count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        nll, count = next_token_nll(model, *pad_batch(sequences[start : start + batch_size], pad_id))
        total_nll, total_count = total_nll + nll.item(), total_count + count
    return math.exp(total_nll / total_count)


@torch.no_grad()
def sample_continuations(
    model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, batch_size: int = 64
) -> list[str]:
    """Ancestral samples (temperature 1, no top-k or top-p: the distribution a policy starts from) after
    `<bos> prompt` (as an episode starts, envs/text/tokens.py), decoded without special tokens; each
    continuation keeps its leading space."""
    torch.manual_seed(seed)
    model.eval()
    completions = []
    for start in range(0, len(prompts), batch_size):
        _, ids, mask, pad = left_padded(tokenizer, prompts[start : start + batch_size])
        out = model.generate(
            ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        completions += tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return completions

"""Whole-sequence data for sequence GANs (algos/seqgan.py): real token sequences of one length, and the metrics
a generator's samples are judged by. An env kind that offers one defines `sequence_task(settings)`.

Mode-collapse checks (Zhu et al. 2018, Texygen): BLEU-n of each sample against a reference set measures
quality; self-BLEU (each sample against the other samples) and distinct-n measure diversity.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from core.agent import inverse_cdf_sample

Metrics = Callable[[torch.Tensor], dict[str, float]]


@dataclass
class SequenceTask:
    """`real`: [N, length] token ids the discriminator calls real and MLE fits. `metrics(samples)` returns
    named scalars for `num_eval` generated samples; `headline` names the one summary.json reports."""

    name: str
    real: torch.Tensor
    vocab_size: int
    start_token: int
    metrics: Metrics
    headline: str
    lower_is_better: bool
    num_eval: int  # samples generated for each evaluation
    decode: Callable[[torch.Tensor], list[str]] | None = None
    pretrained_generator: str | None = None  # a causal LM folder or name the transformer generator starts from

    @property
    def length(self) -> int:
        return self.real.shape[1]


def ngrams(tokens: list, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class BleuReferences:
    """Sentence BLEU (Papineni et al. 2002) of hypotheses against one shared set of references, as NLTK's
    `sentence_bleu` with equal weights and smoothing method 1 (epsilon 0.1 for empty n-gram matches), the
    setting Texygen uses. Clipped counts take the maximum count of each n-gram over all references, so
    those maxima are built once for the whole set rather than per hypothesis."""

    def __init__(self, references: list[list], max_n: int = 4):
        self.max_n = max_n
        self.max_counts: list[Counter] = [Counter() for _ in range(max_n)]
        for ref in references:
            for n in range(1, max_n + 1):
                most = self.max_counts[n - 1]
                for gram, count in ngrams(ref, n).items():
                    most[gram] = max(most[gram], count)
        self.lengths = sorted({len(ref) for ref in references})

    def sentence_bleu(self, hypothesis: list) -> float:
        if not hypothesis:
            return 0.0
        log_precision = 0.0
        for n in range(1, self.max_n + 1):
            counts = ngrams(hypothesis, n)
            matched = sum(min(c, self.max_counts[n - 1][g]) for g, c in counts.items())
            if n == 1 and matched == 0:
                return 0.0
            log_precision += math.log((matched or 0.1) / max(1, sum(counts.values()))) / self.max_n
        closest = min(self.lengths, key=lambda r: (abs(r - len(hypothesis)), r))
        brevity = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
        return brevity * math.exp(log_precision)

    def mean_bleu(self, hypotheses: list[list]) -> float:
        return sum(map(self.sentence_bleu, hypotheses)) / len(hypotheses)


def self_bleu(samples: list[list], max_n: int = 4, hypotheses: int = 200) -> float:
    """Mean BLEU of the first `hypotheses` samples against all the others (higher = less diverse)."""
    hypotheses = min(hypotheses, len(samples) // 2)
    return BleuReferences(samples[hypotheses:], max_n).mean_bleu(samples[:hypotheses])


def distinct_n(samples: list[list], n: int) -> float:
    """Distinct n-grams over all n-grams in the samples (Li et al. 2016)."""
    grams = [tuple(s[i : i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def diversity_metrics(samples: list[list]) -> dict[str, float]:
    return {
        "self_bleu4": self_bleu(samples),
        "distinct_2": distinct_n(samples, 2),
        "distinct_3": distinct_n(samples, 3),
    }


# ------------------------------------------------------------------------------------- generators and the oracle
class _HasStartToken(Protocol):
    start_token: int


class LSTMLanguageModel(torch.nn.Module):
    """The SeqGAN paper's generator (and oracle): embedding -> one LSTM layer -> vocabulary logits. The first
    input is the start token's embedding; the start token is not part of the sequence."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, start_token: int, init_std: float = 0.1):
        super().__init__()
        self.start_token = start_token
        self.embedding = torch.nn.Embedding(vocab_size, embedding_dim)
        self.lstm = torch.nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.head = torch.nn.Linear(hidden_dim, vocab_size)
        for p in self.parameters():  # the paper's init_matrix: N(0, 0.1) for every weight and bias
            torch.nn.init.normal_(p, std=init_std)

    def _with_start(self: _HasStartToken, tokens: torch.Tensor) -> torch.Tensor:  # shared with the transformer
        start = torch.full((len(tokens), 1), self.start_token, dtype=torch.long, device=tokens.device)
        return torch.cat([start, tokens], 1)

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        """[B, T, V]: teacher-forced logits of each token given the ones before it."""
        hidden, _ = self.lstm(self.embedding(self._with_start(sequences[:, :-1])))
        return self.head(hidden)

    @torch.no_grad()
    def complete(self, prefix: torch.Tensor, length: int, temperature: float = 1.0) -> torch.Tensor:
        """Sample tokens after each row of `prefix` ([B, t], t may be 0) until rows are `length` long."""
        hidden, state = self.lstm(self.embedding(self._with_start(prefix)))
        tokens = [prefix]
        for step in range(prefix.shape[1], length):
            token = inverse_cdf_sample(torch.softmax(self.head(hidden[:, -1]) / temperature, -1))
            tokens.append(token[:, None])
            if step + 1 < length:
                hidden, state = self.lstm(self.embedding(token[:, None]), state)
        return torch.cat(tokens, 1)


class TransformerLanguageModel(torch.nn.Module):
    """A GPT-2-style causal LM from `transformers` as the generator: a fresh small one, or a pre-trained one
    loaded with `from_pretrained` (the project's base LM for text tasks). Same interface as the LSTM."""

    def __init__(self, model, start_token: int):
        super().__init__()
        self.model, self.start_token = model, start_token

    @classmethod
    def fresh(cls, vocab_size: int, length: int, start_token: int, width: int = 64, layers: int = 2, heads: int = 4):
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=length + 1,
            n_embd=width,
            n_layer=layers,
            n_head=heads,
            bos_token_id=start_token,
            eos_token_id=start_token,
        )
        return cls(GPT2LMHeadModel(config), start_token)

    @classmethod
    def pretrained(cls, name_or_path: str, start_token: int):
        from envs.text.loading import load_causal_lm

        return cls(load_causal_lm(name_or_path)[0].train(), start_token)

    _with_start = LSTMLanguageModel._with_start

    def logits(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=self._with_start(sequences[:, :-1])).logits

    @torch.no_grad()
    def complete(self, prefix: torch.Tensor, length: int, temperature: float = 1.0) -> torch.Tensor:
        out = self.model(input_ids=self._with_start(prefix), use_cache=True)
        tokens = [prefix]
        for step in range(prefix.shape[1], length):
            token = inverse_cdf_sample(torch.softmax(out.logits[:, -1] / temperature, -1))
            tokens.append(token[:, None])
            if step + 1 < length:
                out = self.model(input_ids=token[:, None], cache=out.cache, use_cache=True)
        return torch.cat(tokens, 1)


Generator = LSTMLanguageModel | TransformerLanguageModel  # the generators algo=seqgan trains


def token_log_likelihoods(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[B, T]: log p(token) under [B, T, V] logits."""
    return -torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)


@contextmanager
def evaluating(model: torch.nn.Module):
    """Eval mode (no dropout) and no gradients inside, the model's own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def token_nll(model: Generator, sequences: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """[B]: each sequence's mean per-token negative log-likelihood (nats) under `model`."""
    with evaluating(model):
        return torch.cat(
            [token_log_likelihoods(model.logits(chunk), chunk).neg().mean(1) for chunk in sequences.split(batch_size)]
        )


def generate(model: Generator, n: int, length: int, batch_size: int = 1000, temperature: float = 1.0) -> torch.Tensor:
    """[n, length] samples from the model, its logits divided by `temperature` (1: the model's own distribution;
    below 1 sharper, the quality-for-diversity trade of Caccia et al. 2018). On the model's device."""
    device = next(model.parameters()).device
    with evaluating(model):
        return torch.cat(
            [
                model.complete(
                    torch.empty(min(batch_size, n - i), 0, dtype=torch.long, device=device), length, temperature
                )
                for i in range(0, n, batch_size)
            ]
        )

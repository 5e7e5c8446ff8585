"""Stage 2 (InstructGPT): a reward model r(x, y), a transformer with a scalar head, trained on ranked responses.

For each prompt x, K responses are ranked by a labeller standing in for people. Every pair (y_w, y_l) in
which the labeller prefers y_w gives the Bradley-Terry loss -log sigmoid(r(x, y_w) - r(x, y_l)), and all
pairs of one prompt share a batch (InstructGPT, Ouyang et al. 2022, eq. 1):

    loss(theta) = -1/C(K,2) E_{(x, y_w, y_l) ~ D} [ log sigmoid(r_theta(x, y_w) - r_theta(x, y_l)) ]

K = 2 is plain pairwise data. Responses the labeller scores equal carry no preference and give no pair, so a
group is averaged over its own number of ordered pairs (C(K,2) when the ranking is strict).

The data: a prompt is the first few words of a held-in sentence; its K responses are its own ending and
endings of other sentences, ranked by the "human" labeller (the label of the review each ending comes from;
endings of both labels are drawn, so every group has pairs) or by the "gold" labeller (VADER on prompt +
response).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import AutoModelForSequenceClassification

from core.errors import ConfigError
from envs.text.gold import gold_scores
from envs.text.loading import load_report_silenced
from envs.text.pipeline.base_lm import warmup_cosine
from envs.text.pipeline.corpus import Sentence
from envs.text.pipeline.settings import TextModelSettings

log = logging.getLogger("tokengym.text")


@dataclass(frozen=True)
class RankedGroup:
    """One prompt, its K responses, and the labeller's score of each (higher is preferred)."""

    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]

    def texts(self) -> list[str]:
        return [self.prompt + response for response in self.responses]


def initial_reward_model(base_lm: str | Path):
    """The reward model before training: the base LM's trunk under a new linear head with one output, r(x, y),
    randomly initialised (the head is absent from the base LM by design, so transformers' report of it is replaced
    by one line of ours). Weights the load could not match beyond that head are logged as a warning."""
    with load_report_silenced():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            base_lm, num_labels=1, output_loading_info=True
        )
    head = {name for name, _ in model.score.named_parameters(prefix="score")}
    log.info(
        "reward model: new scalar head %s on the trunk of %s, randomly initialised; stage 2 trains it",
        ", ".join(sorted(info["missing_keys"] & head)),
        base_lm,
    )
    unmatched = sorted(map(str, (info["missing_keys"] - head) | info["unexpected_keys"] | info["mismatched_keys"]))
    if unmatched:
        log.warning(
            "reward model from %s: weights missing, unexpected or of another shape: %s", base_lm, ", ".join(unmatched)
        )
    return model


def split_prompt(text: str, prompt_words: int) -> tuple[str, str]:
    """(the first `prompt_words` words, the rest with its leading space), so that prompt + ending == text
    with single spaces."""
    words = text.split()
    return " ".join(words[:prompt_words]), " " + " ".join(words[prompt_words:])


def make_ranked_groups(
    sentences: list[Sentence], n_prompts: int, k: int, prompt_words: int, labeller: str, rng: random.Random
) -> list[RankedGroup]:
    """Up to `n_prompts` groups of K responses, built from `sentences` only (held-in, or held-out for
    evaluation). Sentences need at least prompt_words + 2 words to give a prompt and an ending."""
    usable = [s for s in sentences if len(s.text.split()) >= prompt_words + 2]
    if len(usable) < k:
        raise ConfigError(
            f"only {len(usable)} sentences have the {prompt_words + 2} words needed for a prompt "
            f"and an ending; {k} are needed for K={k} responses per prompt"
        )
    by_label = {label: [s for s in usable if s.label == label] for label in (0, 1)}
    groups = []
    for own in rng.sample(usable, min(n_prompts, len(usable))):
        prompt, own_ending = split_prompt(own.text, prompt_words)
        others = _other_sentences(own, usable, by_label, k - 1, labeller, rng)
        endings = [own_ending] + [split_prompt(s.text, prompt_words)[1] for s in others]
        if labeller == "human":
            scores = [float(_human_label(s)) for s in [own, *others]]
        else:
            scores = gold_scores([prompt + ending for ending in endings]).tolist()
        if len(set(scores)) > 1:
            groups.append(RankedGroup(prompt, tuple(endings), tuple(scores)))
    return groups


def _human_label(sentence: Sentence) -> int:
    """The file label the human labeller ranks by (TextModelSettings requires one for each text file)."""
    if sentence.label is None:
        raise ConfigError(f"labeller=human needs labelled sentences; {sentence.text!r} has no label")
    return sentence.label


def _other_sentences(
    own: Sentence, usable: list[Sentence], by_label: dict, n: int, labeller: str, rng: random.Random
) -> list[Sentence]:
    """`n` other sentences to take endings from. The human labeller needs both labels in a group: about half
    come from the opposite label (at least one), the rest from the same label."""
    if labeller == "gold":
        return [s for s in rng.sample(usable, n + 1) if s is not own][:n]
    n_opposite = max(1, (n + 1) // 2)
    opposite = rng.sample(by_label[1 - _human_label(own)], n_opposite)
    same = [s for s in rng.sample(by_label[own.label], n - n_opposite + 1) if s is not own][: n - n_opposite]
    return opposite + same


def ranking_loss(rewards: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """InstructGPT eq. 1 over a batch of groups. rewards, scores: (groups, K). For each group, the mean of
    -log sigmoid(r_w - r_l) over its pairs with score_w > score_l; then the mean over groups that have pairs."""
    prefer = scores[:, :, None] > scores[:, None, :]  # prefer[g, w, l]
    margins = rewards[:, :, None] - rewards[:, None, :]
    pair_losses = -F.logsigmoid(margins) * prefer
    n_pairs = prefer.sum(dim=(1, 2))
    has_pairs = n_pairs > 0
    return (pair_losses.sum(dim=(1, 2))[has_pairs] / n_pairs[has_pairs]).mean()


def pairwise_accuracy(rewards: torch.Tensor, scores: torch.Tensor) -> float:
    """Share of ordered pairs (score_w > score_l, same group) with r_w > r_l; a tie in r counts one half."""
    prefer = scores[:, :, None] > scores[:, None, :]
    margins = (rewards[:, :, None] - rewards[:, None, :])[prefer]
    return ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item()


def reward_scores(model, tokenizer, texts: list[str], label: str | int | None = None) -> torch.Tensor:
    """r(text) for a batch: the scalar head's output (num_labels = 1), or the logit of `label` (a name in
    config.label2id, or an index) for a classifier with several labels. Runs with grad when grad is on."""
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(model.device)
    logits = model(**batch).logits
    return logits[:, label_index(model.config, label)]


def label_index(config, label: str | int | None) -> int:
    if config.num_labels == 1:
        return 0
    if label is None:
        raise ConfigError(
            f"the reward model has {config.num_labels} labels {dict(config.id2label)}; name the "
            f"one whose logit is the reward (e.g. the positive label)"
        )
    if isinstance(label, int):
        if not 0 <= label < config.num_labels:
            raise ConfigError(f"label index {label} is out of range for {config.num_labels} labels")
        return label
    if label not in config.label2id:
        raise ConfigError(f"label {label!r} is not one of the reward model's labels {list(config.label2id)}")
    return int(config.label2id[label])


def group_rewards(model, tokenizer, groups: list[RankedGroup]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, labeller scores), both (groups, K)."""
    k = len(groups[0].responses)
    texts = [text for group in groups for text in group.texts()]
    rewards = reward_scores(model, tokenizer, texts).view(len(groups), k)
    return rewards, torch.tensor([group.scores for group in groups])


def train_reward_model(model, tokenizer, groups: list[RankedGroup], settings: TextModelSettings) -> None:
    """AdamW on the ranking loss, `rm_batch_prompts` whole groups per batch, warm-up-cosine rate, clip 1."""
    rng = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(groups) / settings.rm_batch_prompts)
    total_steps = steps_per_epoch * settings.rm_epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.rm_learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
    model.train()
    step, start = 0, time.perf_counter()
    for _ in range(settings.rm_epochs):
        order = rng.sample(groups, len(groups))
        for first in range(0, len(order), settings.rm_batch_prompts):
            rewards, scores = group_rewards(model, tokenizer, order[first : first + settings.rm_batch_prompts])
            loss = ranking_loss(rewards, scores)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step % max(1, total_steps // 10) == 0:
                log.info(
                    "RM step %d/%d loss %.3f, batch pairwise accuracy %.2f, %.1f s",
                    step,
                    total_steps,
                    loss.item(),
                    pairwise_accuracy(rewards.detach(), scores),
                    time.perf_counter() - start,
                )
    model.eval()


@torch.no_grad()
def evaluate_ranking(model, tokenizer, groups: list[RankedGroup], batch_groups: int = 32) -> dict[str, float]:
    """Held-out ranking loss and pairwise accuracy."""
    model.eval()
    reward_chunks, score_chunks = zip(
        *(group_rewards(model, tokenizer, groups[i : i + batch_groups]) for i in range(0, len(groups), batch_groups))
    )
    rewards, scores = torch.cat(reward_chunks), torch.cat(score_chunks)
    return {"loss": ranking_loss(rewards, scores).item(), "pairwise_accuracy": pairwise_accuracy(rewards, scores)}

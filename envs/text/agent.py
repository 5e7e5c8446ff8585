"""The text agent: any Hugging Face causal LM with a scalar value head, inside the agent contract of
algos/common.py (act / evaluate / distribution / value), so no algorithm file knows it is generating text.

Observations are token ids right-padded with -1. Per-token samples of one episode are prefixes of each
other: `evaluate` runs one forward pass over each longest sequence and reads every shorter sample's logits
at its own position (causal attention makes them the same as a forward over the prefix alone).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Distribution

from algos.common import CategoricalHead, layer_init, require
from envs.text.env import PAD


def group_by_longest(obs: torch.Tensor) -> tuple[list[int], list[int], torch.Tensor]:
    """(rows to run, each sample's index among them, each sample's length).

    After a lexicographic sort, a sequence that is a prefix of any other is a prefix of its successor, so one
    backward pass over the sorted order assigns every sample to the longest sequence extending it."""
    lengths = (obs != PAD).sum(1)
    rows = [tuple(r[:n]) for r, n in zip(obs.tolist(), lengths.tolist())]
    order = sorted(range(len(rows)), key=rows.__getitem__)
    runs, group, successor = [], [0] * len(rows), None
    for i in reversed(order):
        if successor is None or rows[successor][: len(rows[i])] != rows[i]:
            runs.append(i)
        group[i] = len(runs) - 1
        successor = i
    return runs, group, lengths


class TextAgent(nn.Module):
    """Policy = the LM's next-token distribution over the action space; value = a linear head on the LM's
    last hidden state at the observation's last token (a value head on the policy trunk, as in Ziegler et al.)."""

    def __init__(self, lm: nn.Module, n_actions: int):
        super().__init__()
        require(lm.config.vocab_size >= n_actions, f"the policy model's vocabulary ({lm.config.vocab_size}) is "
                f"smaller than its tokenizer's ({n_actions}); use the tokenizer saved with the model")
        self.lm, self.n_actions, self.obs_normalizer = lm, n_actions, None
        self.value_head = layer_init(nn.Linear(lm.config.hidden_size, 1), std=0.01)
        self.lm.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str, n_actions: int) -> "TextAgent":
        from envs.text.loading import load_causal_lm

        lm, _ = load_causal_lm(name_or_path)
        return cls(lm, n_actions)

    def train(self, mode: bool = True) -> "TextAgent":
        """Dropout stays off: rollouts and updates must see the same policy."""
        super().train(mode)
        self.lm.eval()
        return self

    def _logp_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        runs, group, lengths = group_by_longest(obs)
        ids = obs[runs][:, : int(lengths.max())]
        out = self.lm(input_ids=ids.clamp(min=0), attention_mask=(ids != PAD).long(), output_hidden_states=True)
        at = (torch.as_tensor(group), lengths - 1)
        logits = out.logits[at][:, : self.n_actions].float()
        return torch.log_softmax(logits, -1), self.value_head(out.hidden_states[-1][at].float()).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self._logp_and_value(obs)[0])

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._logp_and_value(obs)[1]

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp, value = self._logp_and_value(obs)
        action = CategoricalHead.sample(logp)
        return action, CategoricalHead.log_prob_entropy(logp, action)[0], value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp, value = self._logp_and_value(obs)
        return *CategoricalHead.log_prob_entropy(logp, action), value

    @torch.no_grad()
    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self._logp_and_value(obs)[0].argmax(-1)

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.lm.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.value_head.parameters())

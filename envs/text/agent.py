"""The text agent: any Hugging Face causal LM with a scalar value head, inside the agent contract
(core/agent.py, AgentContract; PretrainingAgent for PPO-ptx), so no algorithm file knows it is generating text.

Observations are token ids right-padded with -1. Per-token samples of one episode are prefixes of each
other: `evaluate` runs one forward pass over each longest sequence and reads every shorter sample's logits
at its own position (causal attention makes them the same as a forward over the prefix alone).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol, cast

import torch
from torch import nn
from torch.distributions import Categorical, Distribution
from transformers import DynamicCache

from core.agent import CategoricalHead, layer_init
from core.checks import require
from core.devices import CPU, Placement
from envs.text.tokens import PAD

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


class _KeyValueLayer(Protocol):
    """One attention layer's part of a KV cache: keys and values, [batch, heads, positions, head size]."""

    is_initialized: bool
    keys: torch.Tensor
    values: torch.Tensor


def _attention_layers(cache: DynamicCache) -> list[_KeyValueLayer]:
    """The cache's layers as attention layers' keys and values, the only kind the decoder splices: it serves
    attention LMs (transformers types a layer more broadly: linear-attention states, or a placeholder without any
    cache)."""
    return cast("list[_KeyValueLayer]", cache.layers)


class IncrementalDecoder:
    """A KV cache for the rows of a vector env, each a sequence that grows by one token per step and restarts
    with a new prompt when its episode ends (DESIGN.md section 3: no recomputation of prefixes).

    The cache is left-padded to a common width. A row whose observation is not its previous one plus one
    token is new: its tokens but the last are run once and spliced into its cache rows (the cache grows on the
    left when they are longer). Then every row's newest token is fed in one incremental step, with per-row
    position ids, so each row sees exactly its own sequence."""

    cache: DynamicCache | None
    mask: torch.Tensor | None  # [rows, cache width]: 1 where a row's cache entry is one of its tokens
    obs: torch.Tensor | None  # the observations of the last step, and their lengths
    lengths: torch.Tensor | None

    def __init__(self, lm: nn.Module):
        self.lm = lm
        self.reset()

    def reset(self) -> None:
        self.cache, self.mask, self.obs, self.lengths = None, None, None, None

    @torch.no_grad()
    def step(self, obs: torch.Tensor):
        """The model's output for each row's newest token (`.logits` of a causal LM, `.hidden_states`)."""
        lengths = (obs != PAD).sum(1)
        new_rows = self._new_rows(obs, lengths)
        if new_rows.any():
            self._splice(obs, lengths, new_rows)
        assert self.mask is not None  # made by _splice for the first step's rows (all new)
        mask = torch.cat([self.mask, torch.ones(len(obs), 1, dtype=torch.long, device=obs.device)], 1)
        out = self.lm(
            input_ids=obs[torch.arange(len(obs), device=obs.device), lengths - 1][:, None],
            attention_mask=mask,
            position_ids=(lengths - 1)[:, None],
            cache=self.cache,
            use_cache=True,
            output_hidden_states=True,
        )
        self.cache, self.mask, self.obs, self.lengths = out.cache, mask, obs.clone(), lengths
        self._drop_empty_columns()
        return out

    def _new_rows(self, obs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cache is None or self.obs is None or self.lengths is None or self.obs.shape != obs.shape:
            self.reset()
            return torch.ones(len(obs), dtype=torch.bool, device=obs.device)
        extends = ((obs == self.obs) | (self.obs == PAD)).all(1)
        return ~(extends & (lengths == self.lengths + 1))

    def _splice(self, obs: torch.Tensor, lengths: torch.Tensor, new_rows: torch.Tensor) -> None:
        rows = new_rows.nonzero().squeeze(1)
        context = lengths[rows] - 1  # all but the last token, which the incremental step feeds
        width, device = int(context.max()), obs.device
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        row_mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        for i, (row, n) in enumerate(zip(rows.tolist(), context.tolist())):
            if n:
                ids[i, width - n :] = obs[row, :n]
                row_mask[i, width - n :] = 1
        if self.cache is None:
            self.cache, self.mask = DynamicCache(), torch.zeros(len(obs), 0, dtype=torch.long, device=device)
        assert self.mask is not None  # made with the cache
        if width == 0:  # prompts of one token: nothing to cache, only mask the rows' old entries
            self.mask[rows] = 0
            return
        fresh = self.lm(
            input_ids=ids, attention_mask=row_mask, position_ids=(row_mask.cumsum(1) - 1).clamp(min=0), use_cache=True
        ).cache
        grow = max(0, width - self.mask.shape[1])
        self.mask = torch.cat([torch.zeros(len(obs), grow, dtype=torch.long, device=device), self.mask], 1)
        total = self.mask.shape[1]
        padding = torch.zeros(len(rows), total - width, dtype=torch.long, device=device)
        self.mask[rows] = torch.cat([padding, row_mask], 1)
        layers = _attention_layers(self.cache)
        if not layers or not layers[0].is_initialized:
            self.cache = fresh  # the first splice holds every row
            return
        for layer, new in zip(layers, fresh.layers):
            layer.keys, layer.values = (
                self._place(old, kv, rows, grow, total)
                for old, kv in ((layer.keys, new.keys), (layer.values, new.values))
            )

    @staticmethod
    def _place(old: torch.Tensor, new: torch.Tensor, rows: torch.Tensor, grow: int, total: int) -> torch.Tensor:
        """Left-pad the batch's keys (or values) by `grow` columns and write `new` right-aligned into `rows`."""
        b, h, _, d = old.shape
        merged = torch.cat([old.new_zeros(b, h, grow, d), old], 2)
        merged[rows] = torch.cat([new.new_zeros(len(rows), h, total - new.shape[2], d), new], 2)
        return merged

    def _drop_empty_columns(self) -> None:
        """Columns masked in every row (left over from finished episodes) are dropped."""
        assert self.mask is not None  # set by the step that calls this
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        if start:
            assert self.cache is not None  # the step's own cache
            self.mask = self.mask[:, start:]
            for layer in _attention_layers(self.cache):
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]


class SequenceCritic(nn.Module):
    """V(s) = a sequence classifier's scalar head on its own transformer's last hidden state at the observation's
    last token: a value network with parameters apart from the policy's, initialised from the reward model's
    (Stiennon et al. 2020, section 3.4; InstructGPT follows it), so that from the first update it scores the text so
    far as the reward will. It reads the policy's token ids, so it must share the policy's tokenizer, and it keeps
    its own KV cache."""

    def __init__(self, classifier: PreTrainedModel):
        super().__init__()
        require(
            classifier.config.num_labels == 1 and isinstance(getattr(classifier, "score", None), nn.Linear),
            f"env.value_model must be a sequence classifier with one label and a linear `score` head (GPT-2 "
            f"or Llama style, like the project's reward model); {type(classifier).__name__} with "
            f"{classifier.config.num_labels} labels is not; set env.value_model=null for a head on the policy",
        )
        self.body, self.head = classifier.base_model, cast(nn.Linear, classifier.score)  # a Linear: required above
        self.decoder = IncrementalDecoder(self.body)

    @torch.no_grad()
    def rollout_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder.step(obs).hidden_states[-1][:, -1]).float().squeeze(-1)

    def values(self, ids: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Values of the samples at positions `at` of the (right-padded) sequences `ids`, in one forward."""
        hidden = self.body(input_ids=ids.clamp(min=0), attention_mask=(ids != PAD).long()).last_hidden_state
        return self.head(hidden[at]).float().squeeze(-1)


class TextAgent(nn.Module):
    """Policy = the LM's next-token distribution over the action space; value = a linear head on the LM's
    last hidden state at the observation's last token (a value head on the policy trunk, as in Ziegler et al.),
    or a separate `SequenceCritic` when one is given. The forward passes run in `placement`'s precision (bf16
    autocast on a GPU, core/devices.py); log-probabilities and values are float32."""

    def __init__(
        self,
        lm: PreTrainedModel,
        n_actions: int,
        tokenizer=None,
        pretraining_texts: list[str] | None = None,
        critic: SequenceCritic | None = None,
        placement: Placement = CPU,
    ):
        super().__init__()
        self.placement = placement
        require(
            lm.config.vocab_size >= n_actions,
            f"the policy model's vocabulary ({lm.config.vocab_size}) is "
            f"smaller than its tokenizer's ({n_actions}); use the tokenizer saved with the model",
        )
        self.lm, self.n_actions = lm, n_actions
        self.tokenizer, self.pretraining_texts = tokenizer, pretraining_texts or []
        self.critic = critic
        self.value_head = layer_init(nn.Linear(lm.config.hidden_size, 1), std=0.01) if critic is None else None
        self.decoder = IncrementalDecoder(lm)
        self.lm.eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        n_actions: int,
        pretraining_texts: list[str] | None = None,
        value_model: str | None = None,
        placement: Placement = CPU,
    ) -> TextAgent:
        """`value_model`: a sequence classifier's name or folder to initialise a separate critic from (None: a
        value head on the policy)."""
        from envs.text.loading import load_causal_lm, load_reward_model, require_same_vocabulary

        lm, tokenizer = load_causal_lm(name_or_path)
        critic = None
        if value_model is not None:
            classifier, critic_tokenizer = load_reward_model(value_model)
            require_same_vocabulary(tokenizer, critic_tokenizer)
            critic = SequenceCritic(classifier)
        return cls(lm, n_actions, tokenizer, pretraining_texts, critic, placement)

    @functools.cached_property
    def pretraining_ids(self) -> list[list[int]]:
        """The corpus's token ids, cut to the model's context; tokenized on first use (only PPO-ptx needs them)."""
        if not self.pretraining_texts:
            return []
        context = getattr(self.lm.config, "n_positions", None) or self.lm.config.max_position_embeddings
        return [ids[:context] for ids in self.tokenizer(self.pretraining_texts).input_ids if len(ids) > 1]

    def pretraining_loss(self, batch_size: int) -> torch.Tensor:
        """Mean next-token negative log-likelihood of `batch_size` random sentences of the task's corpus: the
        pre-training term of PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2: gamma E_x~D_pretrain[log pi(x)])."""
        require(
            bool(self.pretraining_ids),
            "algo.ptx_coef > 0 (PPO-ptx) needs pre-training text: give the task "
            "a corpus (TextTask(..., corpus=[...])), or set algo.ptx_coef=0",
        )
        draws = torch.randint(len(self.pretraining_ids), (batch_size,), device="cpu")
        chosen = [self.pretraining_ids[i] for i in draws.tolist()]
        width, device = max(map(len, chosen)), self.placement.device
        ids = torch.tensor([s + [0] * (width - len(s)) for s in chosen], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chosen], device=device)
        with self.placement.autocast():
            logits = self.lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        return (nll * mask[:, 1:].flatten()).sum() / mask[:, 1:].sum()

    def train(self, mode: bool = True) -> TextAgent:
        """Dropout stays off: rollouts and updates must see the same policy."""
        super().train(mode)
        self.lm.eval()
        if self.critic is not None:
            self.critic.body.eval()
        return self

    def _logp_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        runs, group, lengths = group_by_longest(obs)
        ids = obs[runs][:, : int(lengths.max())]
        at = (torch.as_tensor(group, device=obs.device), lengths - 1)
        with self.placement.autocast():
            out = self.lm(input_ids=ids.clamp(min=0), attention_mask=(ids != PAD).long(), output_hidden_states=True)
            critic_value = self.critic.values(ids, at) if self.critic is not None else None
        logits = out.logits[at][:, : self.n_actions].float()
        if critic_value is None:
            assert self.value_head is not None  # made when there is no critic
            value = self.value_head(out.hidden_states[-1][at].float()).squeeze(-1)
        else:
            value = critic_value
        return torch.log_softmax(logits, -1), value

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self._logp_and_value(obs)[0])

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._logp_and_value(obs)[1]

    def begin_rollout(self, previous_obs: torch.Tensor | None) -> None:
        """A new batch of rollouts starts: the KV cache is rebuilt from the observations, so that a run resumed
        from a checkpoint computes exactly what the uninterrupted run computed. Token ids are not normalised:
        `previous_obs` is not used."""
        self.decoder.reset()
        if self.critic is not None:
            self.critic.decoder.reset()

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rollouts: one token per row per call, through the KV cache (and the critic's own, if it has one)."""
        with self.placement.autocast():
            out = self.decoder.step(obs)
            critic_value = self.critic.rollout_values(obs) if self.critic is not None else None
        logp = torch.log_softmax(out.logits[:, -1, : self.n_actions].float(), -1)
        action = CategoricalHead.sample(logp)
        if critic_value is None:
            assert self.value_head is not None  # made when there is no critic
            value = self.value_head(out.hidden_states[-1][:, -1].float()).squeeze(-1)
        else:
            value = critic_value
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
        critic = self.value_head if self.critic is None else self.critic
        assert critic is not None  # the value head is made when there is no critic
        return list(critic.parameters())

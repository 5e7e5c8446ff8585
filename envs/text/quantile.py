"""vBoN's reward: the task's reward replaced by its log-quantile among reference samples of the same prompt.

Amini et al. 2024, "Variational best-of-N alignment", sec. 3: for distinct rewards, best-of-N from the reference has
the density pi_BoN(y|x) = N pi_ref(y|x) F(r(x, y))^(N - 1), with F(r) = P_{y' ~ pi_ref(.|x)}(r(x, y') <= r) the
reward's CDF under the reference for that prompt. Hence

    KL(pi || pi_BoN) = KL(pi || pi_ref) - (N - 1) E_pi[log F(r(x, y))] - log N,

and minimising it is the KL-regularised RL problem with reward log F(r) and beta = 1 / (N - 1): with
env.kl_coef=1/(N-1) and env.kl_target=null, any algorithm of the suite trains towards best-of-N's distribution
itself (N = 16: kl_coef 0.0667). The objective is invariant to monotone transforms of the reward (its scale and
outliers do not matter), and log F <= 0 rewards nothing beyond the reference's best.

F is estimated from M reference samples of the prompt: F(r) ~ (#{j : r_j <= r} + 1) / (M + 1), the rank of r among
the M rewards and itself, so log F lies in [-log(M + 1), 0]. Each prompt's M samples are drawn once, when the
prompt is first scored, in one `generate` call with those of every episode then in progress, from torch's generator
(the one the policy samples from); the pools drawn so far are part of the env's state in checkpoints, so a
resumed run computes what the uninterrupted run computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from envs.text.sampling import proxy_scores, sample
from envs.text.tasks import TextTask


class ReferenceQuantileReward:
    """log F(r) of each (prompt index, reward) pair, with F from `samples` reference completions per prompt."""

    def __init__(self, task: TextTask, reference, tokenizer, samples: int, max_new_tokens: int):
        self.task, self.reference, self.tokenizer = task, reference, tokenizer
        self.samples, self.max_new_tokens = samples, max_new_tokens
        self.pools: dict[int, np.ndarray] = {}  # prompt index -> its reference rewards, sorted

    def __call__(self, prompt_index: np.ndarray, rewards: np.ndarray, in_progress: Sequence[int] = ()) -> np.ndarray:
        """The rewards' log F; pools missing for these prompts or for those of the episodes `in_progress` (every
        row's, from the env: their episodes end over the next steps) are drawn first, together."""
        self.draw([int(i) for i in dict.fromkeys([*prompt_index, *in_progress]) if int(i) not in self.pools])
        ranks = [np.searchsorted(self.pools[int(i)], r, side="right") for i, r in zip(prompt_index, rewards)]
        return np.log((np.asarray(ranks, dtype=float) + 1) / (self.samples + 1))

    def draw(self, prompt_indices: list[int]) -> None:
        """The pools of these prompts, all in one batch of samples."""
        if not prompt_indices:
            return
        drawn = sample(self.reference, self.tokenizer, [self.task.prompts[i] for i in prompt_indices], self.samples,
                       self.max_new_tokens)  # fmt: skip
        scores = proxy_scores(self.task, drawn.prompts, drawn.completions).reshape(len(prompt_indices), self.samples)
        self.pools.update(zip(prompt_indices, np.sort(scores, axis=1)))

    def state_dict(self) -> dict:
        indices = sorted(self.pools)
        rewards = np.stack([self.pools[i] for i in indices]) if indices else np.zeros((0, self.samples))
        return {"prompt_index": torch.tensor(indices, dtype=torch.long), "rewards": torch.from_numpy(rewards)}

    def load_state_dict(self, state: dict) -> None:
        self.pools = dict(zip(state["prompt_index"].tolist(), state["rewards"].numpy().copy()))

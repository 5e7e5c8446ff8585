"""RLOO: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
Feedback in LLMs", section 3.2 (REINFORCE Leave-One-Out, after Kool et al. 2019).

For each start state, k episodes y_1..y_k are sampled; each is its own action (the sequence-level view of
sec. 3.1), scored by its whole return R(y_i), and baselined by the mean return of the other k - 1:

    grad J = 1/k sum_i (R(y_i) - 1/(k-1) sum_{j != i} R(y_j)) grad log pi(y_i | x),
    log pi(y_i | x) = sum_t log pi(a_i,t | s_i,t)

There is no critic. The KL to the reference enters as a per-sequence penalty in the reward,
R(y) = r(x, y) - beta sum_t log(pi(a_t|s_t) / pi_ref(a_t|s_t)), which the shared rollout already adds for any env
that reports a reference policy (env.kl_coef). With `clip_coef` set, the update is PPO-style instead, over
`update_epochs` passes: the clipped surrogate (algos/ppo_clip.py, eq. 7) of each step's ratio with the sequence's
advantage, summed over the sequence (`clip_level=token`), or of the whole sequence's ratio
r_i = pi(y_i|x) / pi_old(y_i|x) (`clip_level=sequence`, as TRL 1.16's RLOOTrainer has it). At one on-policy step
both gradients equal the plain estimator's; after it, a sequence of T tokens may move by up to (1 + eps)^T under
token-level clipping and by 1 + eps under sequence-level clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from algos import distributed
from algos.group_rollout import EpisodeBatch, sequence_sums
from algos.losses import approx_kl
from algos.ppo_clip import clipped_surrogate
from algos.run import start_group_run
from algos.settings import check_config
from core.checks import require, require_choice, require_positive


def leave_one_out_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """R_i - b_i with b_i the mean return of the other k - 1 episodes of i's group (sec. 3.2)."""
    grouped = returns.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def reinforce_loss(logprob: torch.Tensor, advantages: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
    """-1/k sum_i A_i log pi(y_i | x) over the episodes with steps in the minibatch, log pi(y | x) the sum of the
    sequence's per-step log-probabilities: minus the RLOO gradient estimate."""
    episodes = episode.unique()
    sequence_logprob = sequence_sums(logprob, episode, len(advantages))[episodes]
    return -(advantages[episodes] * sequence_logprob).mean()


def clipped_sequence_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, episode: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """RLOO with PPO-style clipping of each token: -mean over sequences of sum_t min(r_t A_i, clip(r_t) A_i)."""
    episodes = episode.unique()
    per_step = clipped_surrogate(ratio, advantages[episode], clip_coef)
    return -sequence_sums(per_step, episode, len(advantages))[episodes].mean()


def clipped_sequence_ratio_loss(
    log_ratio: torch.Tensor, advantages: torch.Tensor, episode: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """RLOO with PPO-style clipping of the sequence (TRL's): -mean_i min(r_i A_i, clip(r_i) A_i), with
    r_i = exp(sum_t log r_i,t) the ratio of the whole sequence's probabilities."""
    episodes = episode.unique()
    ratio = sequence_sums(log_ratio, episode, len(advantages))[episodes].exp()
    return -clipped_surrogate(ratio, advantages[episodes], clip_coef).mean()


@dataclass
class Hyperparameters:
    """RLOO. The defaults here are the only ones: algos/registry.py stores them as the Hydra config group `algo`."""

    name: str = "rloo"
    group_size: int = 4  # k: episodes per start state; env.num_envs must be a multiple of it
    max_episode_steps: int = 500  # an episode still running after this many steps is truncated
    learning_rate: float = 1e-3  # Adam step size (annealed linearly to 0 if anneal_lr)
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    normalize_advantages: bool = False  # divide the batch's leave-one-out advantages by their std (TRL's option)
    clip_coef: float | None = None  # null: plain REINFORCE, one step per batch; a number: PPO-style clipping
    clip_level: str = "token"  # what clip_coef clips: each token's ratio, or the whole sequence's (TRL's)
    update_epochs: int = 1  # passes over each batch (more than 1 needs clip_coef)
    num_minibatches: int = 1  # sets of whole episodes per pass
    max_grad_norm: float = 0.5

    def __post_init__(self):
        require(
            self.group_size >= 2,
            f"algo.group_size={self.group_size}: the leave-one-out baseline needs at "
            f"least 2 episodes per group; set algo.group_size >= 2",
        )
        require(
            self.max_episode_steps >= 1,
            f"algo.max_episode_steps={self.max_episode_steps} is less than one "
            f"step; set it to at least the episodes' usual length",
        )
        require_positive(self, "learning_rate", "adam_eps", "update_epochs", "num_minibatches", "max_grad_norm")
        require(
            self.clip_coef is None or 0 < self.clip_coef <= 1,
            f"algo.clip_coef={self.clip_coef} must lie in (0, 1], or be null for plain REINFORCE",
        )
        require_choice(self, "clip_level", ("token", "sequence"))
        require(
            self.clip_coef is not None or self.update_epochs * self.num_minibatches == 1,
            "plain REINFORCE (algo.clip_coef=null) takes one step per batch; set algo.update_epochs=1 and "
            "algo.num_minibatches=1, or set algo.clip_coef (e.g. 0.2) for several steps",
        )


def rloo_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    batch: EpisodeBatch,
    idx: torch.Tensor | slice,
    clip_coef: float | None,
    clip_level: str,
) -> torch.Tensor:
    episode = batch.episode[idx]
    if clip_coef is None:
        return reinforce_loss(logprob, advantages, episode)
    if clip_level == "sequence":
        return clipped_sequence_ratio_loss(logprob - old_logprob, advantages, episode, clip_coef)
    return clipped_sequence_loss((logprob - old_logprob).exp(), advantages, episode, clip_coef)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_group_run(
        config, "rloo", run_dir, hp.group_size, hp.max_episode_steps, hp.num_minibatches, kl_target=None
    )
    agent, rollout = run.agent, run.rollout
    params = agent.actor_parameters()
    optimizer = torch.optim.Adam(params, lr=hp.learning_rate, eps=hp.adam_eps, fused=True)
    state = run.start({"optimizer": optimizer}, {})

    for update in run.updates():
        lr = hp.learning_rate * ((1.0 - run.progress()) if hp.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        batch = rollout.collect()
        advantages = leave_one_out_advantages(batch.returns, hp.group_size)
        if hp.normalize_advantages:
            advantages = advantages / (distributed.sample_std(advantages) + 1e-8)

        for _ in range(hp.update_epochs):
            for idx in batch.minibatch_indices(hp.num_minibatches):
                logprob, entropy, _ = agent.evaluate(batch.obs[idx], batch.actions[idx])
                loss = rloo_loss(logprob, batch.logprobs[idx], advantages, batch, idx, hp.clip_coef, hp.clip_level)
                optimizer.zero_grad()
                loss.backward()
                distributed.average_gradients(params)
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm, foreach=True)
                optimizer.step()

        run.end_update(
            update,
            {
                "losses/policy_loss": loss.item(),
                "losses/entropy": entropy.mean().item(),
                "losses/approx_kl": approx_kl(logprob.detach() - batch.logprobs[idx]).item(),
                "charts/learning_rate": lr,
                "charts/group_return_mean": batch.returns.mean().item(),
            },
            state,
        )
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="rloo")

"""GRPO: Shao et al. 2024, "DeepSeekMath", eq. 3 and section 4.1 (group relative policy optimisation).

For each start state (a prompt, an initial state), G episodes o_1..o_G are sampled from pi_old; with outcome
supervision every step of episode i gets the advantage of its return within the group (sec. 4.1.2)

    A_i,t = (R_i - mean(R_1..R_G)) / std(R_1..R_G)

and the policy maximises, over several epochs of each batch (eq. 3),

    J = E[ 1/G sum_i 1/|o_i| sum_t { min(r_i,t A_i,t, clip(r_i,t, 1 - eps, 1 + eps) A_i,t) - beta D_KL,i,t } ]
    r_i,t = pi_theta(o_i,t | q, o_i,<t) / pi_old(o_i,t | q, o_i,<t)
    D_KL,i,t = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1        (eq. 4, the k3 estimator, always >= 0)

There is no critic. The KL term is added wherever the environment reports a reference policy (core/info.py's
ref_logprob: the text env); its reward then carries no KL penalty of its own (env.kl_coef=0 in the text preset).
Options the literature argues about, each one setting: `scale_rewards=false` drops the std division and
`loss_aggregation=constant` the 1/|o_i| (Dr. GRPO, Liu et al. 2025, sec. 3.1); `loss_aggregation=token` averages
over all tokens of the batch instead (DAPO, Yu et al. 2025, sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from algos import distributed
from algos.group_rollout import EpisodeBatch, group_statistics, sequence_sums
from algos.losses import approx_kl
from algos.ppo_clip import clipped_surrogate
from algos.run import start_group_run
from algos.settings import check_config
from core.checks import require, require_choice, require_fraction, require_positive

AGGREGATIONS = ("sequence", "token", "constant")


def group_relative_advantages(returns: torch.Tensor, group_size: int, scale: bool) -> torch.Tensor:
    """(R_i - mean of its group) / std of its group (sec. 4.1.2), per episode; without `scale`, no std division
    (Dr. GRPO). A group whose returns are all equal gets zero advantage (its std is 0: no division by it)."""
    mean, std = group_statistics(returns, group_size)
    centred = returns - mean
    return centred / torch.where(std > 0, std, 1.0) if scale else centred


def k3_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """D_KL(pi_theta || pi_ref) per step, estimated from the sampled action (eq. 4):
    pi_ref / pi_theta - log(pi_ref / pi_theta) - 1, unbiased and never negative."""
    log_ratio = ref_logprob - logprob
    return log_ratio.exp() - log_ratio - 1


def aggregate(per_step: torch.Tensor, episode: torch.Tensor, lengths: torch.Tensor, how: str, cap: int) -> torch.Tensor:
    """The mean over episodes of each episode's mean over its steps ("sequence", eq. 3), the mean over all steps
    ("token", DAPO), or the sum over steps / (episodes * the step cap) ("constant", Dr. GRPO). `episode` holds each
    step's episode index, `lengths` every episode's step count."""
    episodes = episode.unique()
    if how == "token":
        return per_step.mean()
    if how == "constant":
        return per_step.sum() / (len(episodes) * cap)
    sums = sequence_sums(per_step, episode, len(lengths))
    return (sums[episodes] / lengths[episodes]).mean()


@dataclass
class Hyperparameters:
    """GRPO. The defaults here are the only ones: algos/registry.py stores them as the Hydra config group `algo`."""

    name: str = "grpo"
    group_size: int = 8  # G: episodes per start state; env.num_envs must be a multiple of it
    max_episode_steps: int = 500  # an episode still running after this many steps is truncated
    learning_rate: float = 1e-3  # Adam step size (annealed linearly to 0 if anneal_lr)
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    update_epochs: int = 4  # passes over each batch of episodes
    num_minibatches: int = 4  # sets of whole episodes per pass
    clip_coef: float = 0.2  # eps
    kl_coef: float = 0.0  # beta of the KL to the reference in the loss (envs that report ref_logprob)
    scale_rewards: bool = True  # divide by the group's std (false: Dr. GRPO)
    loss_aggregation: str = "sequence"  # "sequence" (GRPO), "token" (DAPO), "constant" (Dr. GRPO)
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5

    def __post_init__(self):
        require(
            self.group_size >= 2,
            f"algo.group_size={self.group_size}: a group needs at least 2 episodes to "
            f"compare; set algo.group_size >= 2",
        )
        require(
            self.max_episode_steps >= 1,
            f"algo.max_episode_steps={self.max_episode_steps} is less than one "
            f"step; set it to at least the episodes' usual length",
        )
        require_positive(
            self, "learning_rate", "adam_eps", "update_epochs", "num_minibatches", "clip_coef", "max_grad_norm"
        )
        require_choice(self, "loss_aggregation", AGGREGATIONS)
        require_fraction(self, "clip_coef")
        require(self.kl_coef >= 0 and self.ent_coef >= 0, "algo.kl_coef and algo.ent_coef must be >= 0")


def grpo_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    ref_logprob: torch.Tensor | None,
    batch: EpisodeBatch,
    idx: torch.Tensor | slice,
    hp: Hyperparameters,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-J of eq. 3 over the steps `idx` of `batch` (the clipped term per step, minus beta times the k3 KL where a
    reference is reported), aggregated as `hp.loss_aggregation` says; returns (loss, mean k3 KL)."""
    ratio = (logprob - old_logprob).exp()
    per_step = -clipped_surrogate(ratio, advantages, hp.clip_coef)
    kl = k3_kl(logprob, ref_logprob) if ref_logprob is not None else torch.zeros_like(logprob)
    per_step = per_step + hp.kl_coef * kl
    loss = aggregate(per_step, batch.episode[idx], batch.lengths, hp.loss_aggregation, hp.max_episode_steps)
    return loss, kl.mean()


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_group_run(
        config, "grpo", run_dir, hp.group_size, hp.max_episode_steps, hp.num_minibatches, kl_target=None
    )
    agent, rollout = run.agent, run.rollout
    params = agent.actor_parameters()
    optimizer = torch.optim.Adam(params, lr=hp.learning_rate, eps=hp.adam_eps, fused=True)
    state = run.start({"optimizer": optimizer}, {})

    for update in run.updates():
        lr = hp.learning_rate * ((1.0 - run.progress()) if hp.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        batch = rollout.collect()
        require(
            not hp.kl_coef or batch.ref_logprobs is not None,
            f"algo.kl_coef={hp.kl_coef} puts the KL to a reference policy in the loss, but {config.env.id} "
            f"reports no reference log-probabilities (the text env does); set algo.kl_coef=0",
        )
        step_advantages = group_relative_advantages(batch.returns, hp.group_size, hp.scale_rewards)[batch.episode]

        clipfracs = []
        for _ in range(hp.update_epochs):
            for idx in batch.minibatch_indices(hp.num_minibatches):
                logprob, entropy, _ = agent.evaluate(batch.obs[idx], batch.actions[idx])
                ref = batch.ref_logprobs[idx] if batch.ref_logprobs is not None else None
                pg_loss, ref_kl = grpo_loss(logprob, batch.logprobs[idx], step_advantages[idx], ref, batch, idx, hp)
                loss = pg_loss - hp.ent_coef * entropy.mean()

                optimizer.zero_grad()
                loss.backward()
                distributed.average_gradients(params)
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm, foreach=True)
                optimizer.step()
                with torch.no_grad():
                    logratio = logprob - batch.logprobs[idx]
                    clipfracs.append(((logratio.exp() - 1.0).abs() > hp.clip_coef).float().mean())

        run.end_update(
            update,
            {
                "losses/policy_loss": pg_loss.item(),
                "losses/entropy": entropy.mean().item(),
                "losses/approx_kl": approx_kl(logratio).item(),
                "losses/clipfrac": torch.stack(clipfracs).mean().item(),
                "losses/ref_kl": ref_kl.item(),
                "charts/learning_rate": lr,
                "charts/group_return_mean": batch.returns.mean().item(),
            },
            state,
        )
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="grpo")

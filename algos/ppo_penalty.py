"""PPO with an adaptive KL penalty: Schulman et al. 2017, section 4.

    L^KLPEN(theta) = E_t[ r_t(theta) A_t - beta KL(pi_old(.|s_t) || pi_theta(.|s_t)) ]           (eq. 8)

After each update's epochs, with d = the measured mean KL over the batch:
    d < d_targ / 1.5  ->  beta <- beta / 2;      d > d_targ * 1.5  ->  beta <- beta * 2.
The value loss and entropy bonus are those of eq. 9; one optimizer, several epochs of minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.distributions import kl_divergence

from algos import distributed
from algos.losses import explained_variance, normalize_advantages, value_loss
from algos.networks import slice_distribution
from algos.run import Segments, start_run
from algos.settings import check_config
from core.checks import require, require_choice, require_fraction, require_positive


@dataclass
class Hyperparameters:
    """PPO with the adaptive KL penalty. The defaults here are the only ones: algos/registry.py stores them as the
    Hydra config group `algo`."""

    name: str = "ppo_penalty"
    learning_rate: float = 3e-4
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    num_steps: int = 128
    num_minibatches: int = 4
    minibatch_by: str = "sample"  # "sample", or "env": whole environments, keeping episodes together
    update_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    target_kl: float = 0.01  # d_targ
    init_beta: float = 1.0
    norm_adv: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5

    def __post_init__(self):
        require_choice(self, "minibatch_by", ("sample", "env"))
        require_positive(
            self,
            "learning_rate",
            "adam_eps",
            "num_steps",
            "num_minibatches",
            "update_epochs",
            "target_kl",
            "init_beta",
            "max_grad_norm",
        )
        require_fraction(self, "gamma", "gae_lambda")
        require(self.ent_coef >= 0 and self.vf_coef >= 0, "algo.ent_coef and algo.vf_coef must be >= 0")


def kl_penalty_loss(ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """-L^KLPEN (eq. 8), negated for gradient descent."""
    return -(ratio * advantages).mean() + beta * kl.mean()


def adapt_beta(beta: float, kl: float, target_kl: float) -> float:
    """The adaptive rule of section 4 (1.5 and 2 are the paper's constants)."""
    if kl < target_kl / 1.5:
        return beta / 2
    if kl > target_kl * 1.5:
        return beta * 2
    return beta


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_run(
        config,
        "ppo_penalty",
        run_dir,
        Segments(hp.num_steps, hp.gamma, hp.num_minibatches, hp.minibatch_by),
        kl_target=hp.target_kl,
    )
    agent, rollout = run.agent, run.rollout
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=hp.learning_rate, eps=hp.adam_eps, fused=True)
    state = run.start({"optimizer": optimizer}, {"beta": hp.init_beta})
    beta = state["beta"]

    for update in run.updates():
        lr = hp.learning_rate * ((1.0 - run.progress()) if hp.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        batch = rollout.collect(hp.gae_lambda)
        with torch.no_grad():
            old_dist = agent.distribution(batch.obs)

        for _ in range(hp.update_epochs):
            for idx in batch.minibatch_indices(hp.num_minibatches, hp.minibatch_by):
                logprob, entropy, values = agent.evaluate(batch.obs[idx], batch.actions[idx])
                ratio = torch.exp(logprob - batch.logprobs[idx])
                adv = batch.advantages[idx]
                if hp.norm_adv:
                    adv = normalize_advantages(adv)
                kl = kl_divergence(slice_distribution(old_dist, idx), agent.distribution(batch.obs[idx]))

                pg_loss = kl_penalty_loss(ratio, adv, kl, beta)
                v_loss = value_loss(values, batch.returns[idx])
                loss = pg_loss - hp.ent_coef * entropy.mean() + hp.vf_coef * v_loss

                optimizer.zero_grad()
                loss.backward()
                distributed.average_gradients(params)
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm, foreach=True)
                optimizer.step()

        with torch.no_grad():
            local_kl = kl_divergence(old_dist, agent.distribution(batch.obs)).mean()
            measured_kl = distributed.mean_over_ranks(local_kl).item()  # every rank adapts beta alike
        beta_used, beta = beta, adapt_beta(beta, measured_kl, hp.target_kl)
        run.end_update(
            update,
            {
                "losses/policy_loss": pg_loss.item(),
                "losses/value_loss": v_loss.item(),
                "losses/entropy": entropy.mean().item(),
                "losses/approx_kl": measured_kl,
                "losses/kl_beta": beta_used,
                "charts/learning_rate": lr,
                "losses/explained_variance": explained_variance(batch.values, batch.returns),
            },
            {"beta": beta},
        )
    return run.finish({"beta": beta})


if __name__ == "__main__":
    from algos.cli import main

    main(algo="ppo_penalty")

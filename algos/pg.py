"""Vanilla policy gradient: REINFORCE with reward-to-go and a learned state-value baseline.

    grad J(theta) = E[ sum_t grad log pi_theta(a_t|s_t) (G_t - B(s_t)) ]
    G_t = sum_{k >= t} gamma^(k-t) r_k     (reward-to-go: only rewards after the action count)
    B(s_t) = V_phi(s_t), fitted by regression on G_t

G_t is computed by `algos.rollout.gae` with lambda = 1, where A_t + V(s_t) is exactly the discounted reward-to-go
(an episode cut by the end of the batch, or by a time limit, is completed with V of its last state, as in
Spinning Up's VPG). One policy step per batch; `value_iters` regression steps for the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from algos import distributed
from algos.losses import explained_variance, normalize_advantages, value_loss
from algos.run import Segments, start_run
from algos.settings import check_config
from core.checks import require_fraction, require_positive


@dataclass
class Hyperparameters:
    """REINFORCE with reward-to-go and a learned baseline. The defaults here are the only ones: algos/registry.py
    stores them as the Hydra config group `algo`."""

    name: str = "pg"
    learning_rate: float = 1e-2  # policy Adam step size
    value_learning_rate: float = 1e-3  # baseline Adam step size
    value_iters: int = 80  # baseline regression steps per batch
    num_steps: int = 500  # steps per env per batch
    gamma: float = 0.99
    norm_adv: bool = True  # standardise G_t - B(s_t) over the batch
    max_grad_norm: float = 1.0

    def __post_init__(self):
        require_positive(self, "learning_rate", "value_learning_rate", "value_iters", "num_steps", "max_grad_norm")
        require_fraction(self, "gamma")


def reinforce_loss(logprob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-E[log pi(a_t|s_t) (G_t - B(s_t))]: its gradient is minus the policy gradient estimate."""
    return -(logprob * advantages).mean()


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_run(config, "pg", run_dir, Segments(hp.num_steps, hp.gamma), kl_target=None)
    agent, rollout = run.agent, run.rollout
    policy_opt = torch.optim.Adam(agent.actor_parameters(), lr=hp.learning_rate, fused=True)
    value_opt = torch.optim.Adam(agent.critic_parameters(), lr=hp.value_learning_rate, fused=True)
    state = run.start({"policy": policy_opt, "value": value_opt}, {})

    for update in run.updates():
        batch = rollout.collect(gae_lambda=1.0)  # lambda = 1: returns are the reward-to-go G_t
        adv = batch.advantages
        if hp.norm_adv:
            adv = normalize_advantages(adv)

        logprob, entropy, _ = agent.evaluate(batch.obs, batch.actions)
        pg_loss = reinforce_loss(logprob, adv)
        policy_opt.zero_grad()
        pg_loss.backward()
        distributed.average_gradients(agent.actor_parameters())
        torch.nn.utils.clip_grad_norm_(agent.actor_parameters(), hp.max_grad_norm, foreach=True)
        policy_opt.step()

        for _ in range(hp.value_iters):
            v_loss = value_loss(agent.value(batch.obs), batch.returns)
            value_opt.zero_grad()
            v_loss.backward()
            distributed.average_gradients(agent.critic_parameters())
            value_opt.step()

        run.end_update(
            update,
            {
                "losses/policy_loss": pg_loss.item(),
                "losses/value_loss": v_loss.item(),
                "losses/entropy": entropy.mean().item(),
                "charts/learning_rate": hp.learning_rate,
                "charts/value_learning_rate": hp.value_learning_rate,
                "losses/explained_variance": explained_variance(batch.values, batch.returns),
            },
            state,
        )
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="pg")

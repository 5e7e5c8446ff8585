"""A2C: the synchronous version of Mnih et al. 2016, "Asynchronous Methods for Deep RL" (algorithm S3).

One gradient step per short segment of `num_steps` from every environment:

    A_t  = GAE(gamma, lambda)                    (A_t = delta_t + gamma lambda A_{t+1}; lambda = 1 is n-step)
    loss = -E[log pi(a_t|s_t) A_t] - beta H[pi(.|s_t)] + c_v E[(R_t - V(s_t))^2]

with RMSprop as in the paper (and SB3).
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
from core.checks import require, require_fraction, require_positive


@dataclass
class Hyperparameters:
    """A2C, SB3 defaults (rl-zoo's CartPole set). The defaults here are the only ones: algos/registry.py stores them
    as the Hydra config group `algo`."""

    name: str = "a2c"
    learning_rate: float = 7e-4  # RMSprop step size
    anneal_lr: bool = False
    rms_alpha: float = 0.99  # RMSprop smoothing constant
    rms_eps: float = 1e-5
    num_steps: int = 5  # segment length per env (n of n-step returns)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    norm_adv: bool = False
    ent_coef: float = 0.0  # beta
    vf_coef: float = 0.5  # c_v
    max_grad_norm: float = 0.5

    def __post_init__(self):
        require_positive(self, "learning_rate", "rms_eps", "num_steps", "max_grad_norm")
        require_fraction(self, "rms_alpha", "gamma", "gae_lambda")
        require(self.ent_coef >= 0 and self.vf_coef >= 0, "algo.ent_coef and algo.vf_coef must be >= 0")


def actor_critic_loss(logprob, entropy, values, advantages, returns, ent_coef, vf_coef):
    """Returns (total, policy, value, entropy) terms of the A2C loss."""
    policy_loss = -(logprob * advantages).mean()
    critic_loss = value_loss(values, returns)
    entropy_mean = entropy.mean()
    return policy_loss - ent_coef * entropy_mean + vf_coef * critic_loss, policy_loss, critic_loss, entropy_mean


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_run(config, "a2c", run_dir, Segments(hp.num_steps, hp.gamma), kl_target=None)
    agent, rollout = run.agent, run.rollout
    params = list(agent.parameters())
    optimizer = torch.optim.RMSprop(params, lr=hp.learning_rate, alpha=hp.rms_alpha, eps=hp.rms_eps, foreach=True)
    state = run.start({"optimizer": optimizer}, {})

    for update in run.updates():
        lr = hp.learning_rate * ((1.0 - run.progress()) if hp.anneal_lr else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        batch = rollout.collect(hp.gae_lambda)
        adv = batch.advantages
        if hp.norm_adv:
            adv = normalize_advantages(adv)

        logprob, entropy, values = agent.evaluate(batch.obs, batch.actions)
        loss, pg_loss, v_loss, ent = actor_critic_loss(
            logprob, entropy, values, adv, batch.returns, hp.ent_coef, hp.vf_coef
        )
        optimizer.zero_grad()
        loss.backward()
        distributed.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm, foreach=True)
        optimizer.step()

        run.end_update(
            update,
            {
                "losses/policy_loss": pg_loss.item(),
                "losses/value_loss": v_loss.item(),
                "losses/entropy": ent.item(),
                "charts/learning_rate": lr,
                "losses/explained_variance": explained_variance(batch.values, batch.returns),
            },
            state,
        )
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="a2c")

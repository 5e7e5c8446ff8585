"""PPO-clip: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", section 3 and eq. 9.

    r_t(theta) = pi_theta(a_t | s_t) / pi_theta_old(a_t | s_t)
    L^CLIP     = E_t[ min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) ]                      (eq. 7)
    L          = E_t[ L^CLIP - c_1 (V_theta(s_t) - V_t^targ)^2 + c_2 H[pi_theta](s_t) ]    (eq. 9, maximised)

Advantages come from GAE(lambda) over fixed-length segments of vectorised environments, and are normalised
per minibatch; several epochs of shuffled minibatches follow each rollout. Options: value clipping (CleanRL
clips by default, SB3 does not; off here by default), linear annealing of the learning rate and of eps, and
early stopping of the epochs once the approximate KL exceeds `target_kl` (the epoch loop stops, as in CleanRL).
PPO-ptx (Ouyang et al. 2022, eq. 2) adds gamma times the agent's pre-training negative log-likelihood to the loss
(`ptx_coef`; agents that have pre-training data, e.g. the text agent of a task with a corpus).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from algos import distributed
from algos.losses import approx_kl, explained_variance, normalize_advantages, value_loss
from algos.run import Segments, start_run
from algos.settings import check_config
from core.agent import PretrainingAgent
from core.checks import require, require_choice, require_fraction, require_positive


@dataclass
class Hyperparameters:
    """PPO-clip, CleanRL ppo.py defaults. The defaults here are the only ones: algos/registry.py stores them as the
    Hydra config group `algo`."""

    name: str = "ppo_clip"
    learning_rate: float = 2.5e-4  # Adam step size at the start (annealed linearly to 0 if anneal_lr)
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    num_steps: int = 128  # environment steps per env per rollout (segment length)
    num_minibatches: int = 4  # minibatches the num_envs * num_steps samples are cut into, each epoch
    minibatch_by: str = "sample"  # "sample", or "env": whole environments, keeping episodes together
    update_epochs: int = 4  # passes over each batch
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95
    clip_coef: float = 0.2  # eps of eq. 7
    anneal_clip: bool = False  # anneal eps linearly to 0 with the learning rate (rl-zoo's "lin_0.2")
    clip_vloss: bool = False  # clip the value update to V_old +- clip_coef (CleanRL's default is True)
    norm_adv: bool = True
    ent_coef: float = 0.01  # c_2
    vf_coef: float = 0.5  # c_1
    max_grad_norm: float = 0.5  # global gradient-norm clip
    target_kl: float | None = None  # stop the epochs of an update once approx_kl exceeds this
    ptx_coef: float = 0.0  # PPO-ptx's gamma: weight of the agent's pre-training NLL (agents with a corpus)
    ptx_batch_size: int = 16  # pre-training sequences per minibatch when ptx_coef > 0

    def __post_init__(self):
        require_choice(self, "minibatch_by", ("sample", "env"))
        require_positive(
            self,
            "learning_rate",
            "adam_eps",
            "num_steps",
            "num_minibatches",
            "update_epochs",
            "clip_coef",
            "max_grad_norm",
        )
        require_fraction(self, "gamma", "gae_lambda")
        require(self.ent_coef >= 0 and self.vf_coef >= 0, "algo.ent_coef and algo.vf_coef must be >= 0")
        require(self.target_kl is None or self.target_kl > 0, f"algo.target_kl={self.target_kl} must be > 0")
        require(
            self.ptx_coef >= 0 and self.ptx_batch_size > 0, "algo.ptx_coef must be >= 0 and algo.ptx_batch_size > 0"
        )


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) per sample: the term eq. 7 averages."""
    return torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages)


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """-L^CLIP (eq. 7), negated for gradient descent."""
    return -clipped_surrogate(ratio, advantages, clip_coef).mean()


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_run(
        config,
        "ppo_clip",
        run_dir,
        Segments(hp.num_steps, hp.gamma, hp.num_minibatches, hp.minibatch_by),
        kl_target=hp.target_kl,
    )
    agent, rollout = run.agent, run.rollout
    require(
        not hp.ptx_coef or isinstance(agent, PretrainingAgent),
        f"algo.ptx_coef={hp.ptx_coef} (PPO-ptx) needs an agent with pre-training data, such as the text "
        f"agent; this env's agent has none: set algo.ptx_coef=0",
    )
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=hp.learning_rate, eps=hp.adam_eps, fused=True)
    state = run.start({"optimizer": optimizer}, {})

    for update in run.updates():
        remaining = 1.0 - run.progress()
        lr = hp.learning_rate * (remaining if hp.anneal_lr else 1.0)
        clip = hp.clip_coef * (remaining if hp.anneal_clip else 1.0)
        optimizer.param_groups[0]["lr"] = lr
        batch = rollout.collect(hp.gae_lambda)

        clipfracs, stop_early = [], False
        for _ in range(hp.update_epochs):
            for idx in batch.minibatch_indices(hp.num_minibatches, hp.minibatch_by):
                logprob, entropy, values = agent.evaluate(batch.obs[idx], batch.actions[idx])
                logratio = logprob - batch.logprobs[idx]
                ratio = logratio.exp()
                adv = batch.advantages[idx]
                if hp.norm_adv:
                    adv = normalize_advantages(adv)

                pg_loss = clipped_surrogate_loss(ratio, adv, clip)
                v_loss = value_loss(values, batch.returns[idx], batch.values[idx], clip if hp.clip_vloss else None)
                entropy_loss = entropy.mean()
                loss = pg_loss - hp.ent_coef * entropy_loss + hp.vf_coef * v_loss
                if hp.ptx_coef:
                    ptx_loss = agent.pretraining_loss(hp.ptx_batch_size)  # type: ignore[attr-defined]
                    loss = loss + hp.ptx_coef * ptx_loss

                optimizer.zero_grad()
                loss.backward()
                distributed.average_gradients(params)
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm, foreach=True)
                optimizer.step()

                with torch.no_grad():
                    kl = distributed.mean_over_ranks(approx_kl(logratio))  # every rank stops at the same epoch
                    clipfracs.append(((ratio - 1.0).abs() > clip).float().mean())
                if hp.target_kl is not None and kl > hp.target_kl:
                    stop_early = True
                    break
            if stop_early:
                break

        run.end_update(
            update,
            {
                "losses/policy_loss": pg_loss.item(),
                "losses/value_loss": v_loss.item(),
                "losses/entropy": entropy_loss.item(),
                "losses/approx_kl": kl.item(),
                "losses/clipfrac": torch.stack(clipfracs).mean().item(),
                "charts/learning_rate": lr,
                "losses/explained_variance": explained_variance(batch.values, batch.returns),
                **({"losses/ptx_loss": ptx_loss.item()} if hp.ptx_coef else {}),
            },
            state,
        )
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="ppo_clip")

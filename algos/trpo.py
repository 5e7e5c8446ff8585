"""TRPO: Schulman et al. 2015, "Trust Region Policy Optimization", section 6 and appendix C.

    maximise_theta  L(theta) = E[ pi_theta(a|s) / pi_old(a|s) * A ]
    subject to      KL_bar(theta) = E_s[ KL(pi_old(.|s) || pi_theta(.|s)) ] <= delta

Linearise L (gradient g) and take the quadratic model of KL_bar (its Hessian F, the Fisher matrix):
    direction s = F^-1 g,  by conjugate gradient on Fisher-vector products F v = grad (grad KL_bar . v)
    full step   = sqrt(2 delta / s^T F s) * s          (the step whose quadratic KL is exactly delta)
then backtrack: theta_old + shrink^i * full step, accepting the first step that improves L and keeps the
measured KL_bar <= delta; if none does, the policy stays put. The value function is fitted separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig
from torch.distributions import kl_divergence
from torch.nn.attention import SDPBackend, sdpa_kernel

from algos import common


@dataclass
class Hyperparameters:
    name: str = "trpo"
    max_kl: float = 0.01  # delta, the trust region's size in nats
    cg_iters: int = 15
    cg_damping: float = 0.1  # F + damping * I keeps conjugate gradient stable
    backtrack_iters: int = 10
    backtrack_coef: float = 0.8  # shrink factor per backtracking step
    value_learning_rate: float = 1e-3
    value_epochs: int = 10  # passes of value regression per batch
    num_minibatches: int = 2  # value regression minibatches per pass
    minibatch_by: str = "sample"  # "sample", or "env": whole environments, keeping episodes together
    num_steps: int = 512
    gamma: float = 0.99
    gae_lambda: float = 0.98
    norm_adv: bool = True

    def __post_init__(self):
        common.require_choice(self, "minibatch_by", ("sample", "env"))
        common.require_positive(self, "max_kl", "cg_iters", "cg_damping", "backtrack_iters",
                                "value_learning_rate", "value_epochs", "num_minibatches", "num_steps")
        common.require(0 < self.backtrack_coef < 1, f"algo.backtrack_coef={self.backtrack_coef} must lie in (0, 1)")
        common.require_fraction(self, "gamma", "gae_lambda")


def flat_grad(output: torch.Tensor, params: list[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(output, params, create_graph=create_graph)])


# torch's parameters_to_vector and vector_to_parameters view each parameter as flat, which fails for the
# channels-last convolution weights of the Nature CNN; reshape and copy_ keep any memory layout.
def flat_params(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params(x: torch.Tensor, params: list[torch.Tensor]) -> None:
    for p, chunk in zip(params, x.split([p.numel() for p in params])):
        p.copy_(chunk.view_as(p))


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x (Nocedal & Wright, alg. 5.2)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def backtracking_line_search(surrogate_and_kl: Callable[[torch.Tensor], tuple[float, float]], x0: torch.Tensor,
                             full_step: torch.Tensor, max_kl: float, shrink: float,
                             iters: int) -> tuple[torch.Tensor, int]:
    """First x0 + shrink^i * full_step that improves the surrogate and keeps KL <= max_kl.

    Returns (new parameters, steps tried); with no acceptable step, (x0, iters): the policy does not move.
    """
    surrogate0, _ = surrogate_and_kl(x0)
    for i in range(iters):
        x = x0 + shrink**i * full_step
        surrogate, kl = surrogate_and_kl(x)
        if surrogate > surrogate0 and kl <= max_kl:
            return x, i + 1
    return x0, iters


def train(cfg: DictConfig, run_dir: Path) -> dict:
    hp, run, agent, rollout, num_updates = common.setup(cfg, "trpo", Hyperparameters, run_dir)
    value_opt = torch.optim.Adam(agent.critic_parameters(), lr=hp.value_learning_rate)
    policy_params = agent.actor_parameters()
    first_update, state = run.start({"value": value_opt}, {})

    for update in range(first_update, num_updates):
        batch = rollout.collect(hp.gae_lambda)
        adv = batch.advantages
        if hp.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        with torch.no_grad():
            old_dist = agent.distribution(batch.obs)

        def surrogate_and_kl_at_current():
            dist = agent.distribution(batch.obs)
            ratio = torch.exp(dist.log_prob(batch.actions) - batch.logprobs)
            return (ratio * adv).mean(), kl_divergence(old_dist, dist).mean()

        def surrogate_and_kl(x: torch.Tensor) -> tuple[float, float]:
            set_flat_params(x, policy_params)
            with torch.no_grad():
                surrogate, kl = surrogate_and_kl_at_current()
            return surrogate.item(), kl.item()

        def fisher_vector_product(v: torch.Tensor) -> torch.Tensor:
            # A double backward: PyTorch's fused attention kernels have none, so attention (in a transformer
            # policy) runs through the plain math kernel here.
            with sdpa_kernel(SDPBackend.MATH):
                kl = kl_divergence(old_dist, agent.distribution(batch.obs)).mean()
                grad_kl = flat_grad(kl, policy_params, create_graph=True)
                return flat_grad(grad_kl @ v, policy_params) + hp.cg_damping * v

        surrogate, _ = surrogate_and_kl_at_current()
        g = flat_grad(surrogate, policy_params)
        direction = conjugate_gradient(fisher_vector_product, g, hp.cg_iters)
        full_step = torch.sqrt(2 * hp.max_kl / (direction @ fisher_vector_product(direction))) * direction
        x0 = flat_params(policy_params)
        x, steps = backtracking_line_search(surrogate_and_kl, x0, full_step, hp.max_kl, hp.backtrack_coef,
                                            hp.backtrack_iters)
        new_surrogate, kl = surrogate_and_kl(x)  # also leaves the policy at the accepted parameters

        for _ in range(hp.value_epochs):
            for idx in batch.minibatch_indices(hp.num_minibatches, hp.minibatch_by):
                v_loss = 0.5 * ((agent.value(batch.obs[idx]) - batch.returns[idx]) ** 2).mean()
                value_opt.zero_grad()
                v_loss.backward()
                value_opt.step()

        with torch.no_grad():
            entropy = agent.distribution(batch.obs).entropy().mean()
        run.end_update(update, {
            "losses/policy_loss": -new_surrogate, "losses/value_loss": v_loss.item(), "losses/entropy": entropy.item(),
            "losses/approx_kl": kl, "losses/line_search_steps": steps,
            "charts/learning_rate": hp.value_learning_rate,
            "losses/explained_variance": common.explained_variance(batch.values, batch.returns),
        }, state)
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="trpo")

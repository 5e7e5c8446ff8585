"""TRPO: Schulman et al. 2015, "Trust Region Policy Optimization", section 6 and appendix C.

    maximise_theta  L(theta) = E[ pi_theta(a|s) / pi_old(a|s) * A ]
    subject to      KL_bar(theta) = E_s[ KL(pi_old(.|s) || pi_theta(.|s)) ] <= delta

Linearise L (gradient g) and take the quadratic model of KL_bar (its Hessian F, the Fisher matrix):
    direction s = F^-1 g,  by conjugate gradient on Fisher-vector products F v = grad (grad KL_bar . v)
    full step   = sqrt(2 delta / s^T F s) * s          (the step whose quadratic KL is exactly delta)
then backtrack: theta_old + shrink^i * full step, accepting the first step that improves L and keeps the
measured KL_bar <= delta; if none does, the policy stays put. The value function is fitted separately.

In a data-parallel job (algos/distributed.py) each rank holds an equal share of the batch, so every expectation
above is the mean of the ranks' own: g, each Fisher-vector product inside conjugate gradient, and the line search's
surrogate and KL are averaged over the ranks, which then take the same step (the critic's gradients are averaged
like any other).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.distributions import Distribution, kl_divergence
from torch.nn.attention import SDPBackend, sdpa_kernel

from algos import distributed
from algos.losses import explained_variance, normalize_advantages, value_loss
from algos.rollout import Batch
from algos.run import Segments, start_run
from algos.settings import check_config
from core.agent import AgentContract
from core.checks import require, require_choice, require_fraction, require_positive


@dataclass
class Hyperparameters:
    """TRPO; the trust region and conjugate gradient of section 6 and appendix C. The defaults here are the only
    ones: algos/registry.py stores them as the Hydra config group `algo`."""

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
        require_choice(self, "minibatch_by", ("sample", "env"))
        require_positive(
            self,
            "max_kl",
            "cg_iters",
            "cg_damping",
            "backtrack_iters",
            "value_learning_rate",
            "value_epochs",
            "num_minibatches",
            "num_steps",
        )
        require(0 < self.backtrack_coef < 1, f"algo.backtrack_coef={self.backtrack_coef} must lie in (0, 1)")
        require_fraction(self, "gamma", "gae_lambda")


def flat_grad(output: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(output, params, create_graph=create_graph)])


# torch's parameters_to_vector and vector_to_parameters view each parameter as flat, which fails for the
# channels-last convolution weights of the Nature CNN; reshape and copy_ keep any memory layout.
def flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params(x: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    for p, chunk in zip(params, x.split([p.numel() for p in params])):
        p.copy_(chunk.view_as(p))


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
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


def backtracking_line_search(
    surrogate_and_kl: Callable[[torch.Tensor], tuple[float, float]],
    x0: torch.Tensor,
    full_step: torch.Tensor,
    max_kl: float,
    shrink: float,
    iters: int,
) -> tuple[torch.Tensor, int]:
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


def surrogate_and_kl(
    agent: AgentContract, batch: Batch, advantages: torch.Tensor, old_dist: Distribution
) -> tuple[torch.Tensor, torch.Tensor]:
    """At the agent's current parameters: the surrogate L(theta) = E[pi_theta(a|s) / pi_old(a|s) * A] and the
    mean KL_bar(theta) = E_s[KL(pi_old(.|s) || pi_theta(.|s))], both differentiable."""
    dist = agent.distribution(batch.obs)
    ratio = torch.exp(dist.log_prob(batch.actions) - batch.logprobs)
    return (ratio * advantages).mean(), kl_divergence(old_dist, dist).mean()


def surrogate_and_kl_at(
    params: Sequence[torch.Tensor],
    agent: AgentContract,
    batch: Batch,
    advantages: torch.Tensor,
    old_dist: Distribution,
    x: torch.Tensor,
) -> tuple[float, float]:
    """The line search's view: the policy's parameters set to the flat vector `x`, then `surrogate_and_kl` (the
    ranks' mean)."""
    set_flat_params(x, params)
    with torch.no_grad():
        surrogate, kl = distributed.mean_over_ranks(torch.stack(surrogate_and_kl(agent, batch, advantages, old_dist)))
    return surrogate.item(), kl.item()


def mean_kl(agent: AgentContract, obs: torch.Tensor, old_dist: Distribution) -> torch.Tensor:
    """KL_bar(theta) alone, differentiable (the Fisher-vector product's function)."""
    return kl_divergence(old_dist, agent.distribution(obs)).mean()


def fisher_vector_product(
    mean_kl: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], v: torch.Tensor, damping: float
) -> torch.Tensor:
    """(F + damping I) v, F the Hessian of KL_bar at the current parameters (the Fisher matrix), by a double
    backward: F v = grad((grad KL_bar) . v). PyTorch's fused attention kernels have no double backward, so
    attention (in a transformer policy) runs through the plain math kernel here."""
    with sdpa_kernel(SDPBackend.MATH):
        grad_kl = flat_grad(mean_kl(), params, create_graph=True)
        return distributed.mean_over_ranks(flat_grad(grad_kl @ v, params)) + damping * v


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp = config.algo
    run = start_run(
        config,
        "trpo",
        run_dir,
        Segments(hp.num_steps, hp.gamma, hp.num_minibatches, hp.minibatch_by),
        kl_target=hp.max_kl,
    )
    agent, rollout = run.agent, run.rollout
    value_opt = torch.optim.Adam(agent.critic_parameters(), lr=hp.value_learning_rate, fused=True)
    policy_params = agent.actor_parameters()
    state = run.start({"value": value_opt}, {})

    for update in run.updates():
        batch = rollout.collect(hp.gae_lambda)
        adv = normalize_advantages(batch.advantages) if hp.norm_adv else batch.advantages
        with torch.no_grad():
            old_dist = agent.distribution(batch.obs)

        objective_at = partial(surrogate_and_kl_at, policy_params, agent, batch, adv, old_dist)
        fvp = partial(
            fisher_vector_product, partial(mean_kl, agent, batch.obs, old_dist), policy_params, damping=hp.cg_damping
        )
        g = distributed.mean_over_ranks(flat_grad(surrogate_and_kl(agent, batch, adv, old_dist)[0], policy_params))
        direction = conjugate_gradient(fvp, g, hp.cg_iters)
        full_step = torch.sqrt(2 * hp.max_kl / (direction @ fvp(direction))) * direction
        x0 = flat_params(policy_params)
        x, steps = backtracking_line_search(
            objective_at, x0, full_step, hp.max_kl, hp.backtrack_coef, hp.backtrack_iters
        )
        new_surrogate, kl = objective_at(x)  # also leaves the policy at the accepted parameters

        for _ in range(hp.value_epochs):
            for idx in batch.minibatch_indices(hp.num_minibatches, hp.minibatch_by):
                v_loss = value_loss(agent.value(batch.obs[idx]), batch.returns[idx])
                value_opt.zero_grad()
                v_loss.backward()
                distributed.average_gradients(agent.critic_parameters())
                value_opt.step()

        with torch.no_grad():
            entropy = agent.distribution(batch.obs).entropy().mean()
        run.end_update(
            update,
            {
                "losses/policy_loss": -new_surrogate,
                "losses/value_loss": v_loss.item(),
                "losses/entropy": entropy.item(),
                "losses/approx_kl": kl,
                "losses/line_search_steps": steps,
                "charts/value_learning_rate": hp.value_learning_rate,
                "losses/explained_variance": explained_variance(batch.values, batch.returns),
            },
            state,
        )
    return run.finish(state)


if __name__ == "__main__":
    from algos.cli import main

    main(algo="trpo")

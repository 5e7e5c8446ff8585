"""The terms every actor-critic algorithm shares: the critic's regression loss and the diagnostics logged beside
the losses. Each algorithm's own objective sits in its own file, next to its equation."""

from __future__ import annotations

import torch

from algos import distributed


def value_loss(
    values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None, clip_coef: float | None = None
) -> torch.Tensor:
    """The critic's regression 0.5 E[(V(s_t) - V_t^targ)^2] (the c_1 term of PPO's eq. 9). With `clip_coef`
    (PPO's value clipping, Huang et al. 2022 detail 9), the pessimistic max with V_old + clip(V - V_old, +-eps)."""
    if clip_coef is None:
        return 0.5 * ((values - returns) ** 2).mean()
    assert old_values is not None
    clipped = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """(A - mean A) / (std A + 1e-8) over the batch or minibatch (Huang et al. 2022, detail 7); in a data-parallel
    job, over the ranks' batches or minibatches joined (algos/distributed.py)."""
    return (advantages - distributed.mean(advantages)) / (distributed.sample_std(advantages) + 1e-8)


def approx_kl(logratio: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) estimated as E[(r - 1) - log r] (Schulman's k3 estimator: unbiased, always >= 0)."""
    return ((logratio.exp() - 1) - logratio).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, 0 no better than a constant."""
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - predicted).var() / var)

"""Each algorithm's math on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from algos.a2c import actor_critic_loss
from algos.losses import approx_kl, value_loss
from algos.pg import reinforce_loss
from algos.ppo_clip import clipped_surrogate_loss
from algos.ppo_penalty import adapt_beta, kl_penalty_loss
from algos.rollout import gae
from algos.trpo import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    mean_kl,
    surrogate_and_kl,
)


def direct_gae(rewards, values, ends, last_value, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, summed until the episode ends: the definition, no recursion."""
    T = len(rewards)
    next_values = list(values[1:]) + [last_value]
    deltas = [rewards[t] + gamma * next_values[t] * (1 - ends[t]) - values[t] for t in range(T)]
    advantages = []
    for t in range(T):
        total, weight = 0.0, 1.0
        for k in range(t, T):
            total += weight * deltas[k]
            if ends[k]:
                break
            weight *= gamma * lam
        advantages.append(total)
    return advantages


@pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
def test_gae_matches_direct_sum_across_episode_ends(lam):
    rng = np.random.default_rng(0)
    T, gamma = 7, 0.9
    rewards, values = rng.normal(size=T), rng.normal(size=T)
    ends = np.array([0, 0, 1, 0, 0, 0, 1], dtype=float)
    ends[-1] = 0.0  # the segment ends mid-episode: bootstrapped from last_value
    last_value = 0.37
    expected = direct_gae(rewards, values, ends, last_value, gamma, lam)
    got = gae(
        *(torch.tensor(x, dtype=torch.float64)[:, None] for x in (rewards, values, ends)),
        torch.tensor([last_value], dtype=torch.float64),
        gamma,
        lam,
    )
    np.testing.assert_allclose(got[:, 0].numpy(), expected, rtol=1e-12)


def test_gae_with_lambda_one_gives_discounted_reward_to_go():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [-1.0], [2.0]])
    ends = torch.tensor([[0.0], [0.0], [1.0]])
    returns = gae(rewards, values, ends, torch.tensor([99.0]), 0.5, 1.0) + values
    # G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75; the 99 after the episode's end is unused
    np.testing.assert_allclose(returns[:, 0].numpy(), [2.75, 3.5, 3.0])


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.5, 1.0, 1.2),  # A > 0, ratio above 1 + eps: clipped, no incentive to go further
        (0.5, 1.0, 0.5),  # A > 0, ratio below 1 - eps: the unclipped (smaller) term
        (0.5, -1.0, -0.8),  # A < 0, ratio below 1 - eps: clipped
        (1.5, -1.0, -1.5),  # A < 0, ratio above 1 + eps: the unclipped (more pessimistic) term
    ],
)
def test_clipped_surrogate_four_cases(ratio, adv, expected):
    loss = clipped_surrogate_loss(torch.tensor([ratio]), torch.tensor([adv]), clip_coef=0.2)
    assert loss.item() == pytest.approx(-expected)


def test_clipped_surrogate_has_no_gradient_once_clipped():
    ratio = torch.tensor([1.5, 0.9], requires_grad=True)
    clipped_surrogate_loss(ratio, torch.tensor([1.0, 1.0]), 0.2).backward()
    assert ratio.grad.tolist() == pytest.approx([0.0, -0.5])


def test_value_loss_clipping_takes_the_pessimistic_term():
    values, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert value_loss(values, ret).item() == pytest.approx(0.5 * 1.0)
    # clipped prediction: 0 + clamp(2, -0.5, 0.5) = 0.5, error 2.5: max(1, 6.25) / 2
    assert value_loss(values, ret, old, 0.5).item() == pytest.approx(0.5 * 6.25)


def test_approx_kl_is_k3_estimator():
    logratio = torch.tensor([math.log(2.0), 0.0])
    assert approx_kl(logratio).item() == pytest.approx(((2 - 1) - math.log(2)) / 2)


@pytest.mark.parametrize(
    "kl, expected", [(0.001, 0.5), (0.0066, 0.5), (0.01, 1.0), (0.0149, 1.0), (0.016, 2.0), (0.5, 2.0)]
)
def test_adaptive_beta_rule(kl, expected):
    assert adapt_beta(1.0, kl, target_kl=0.01) == expected


def test_kl_penalty_loss():
    loss = kl_penalty_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -1.0]), torch.tensor([0.1, 0.3]), beta=2.0)
    assert loss.item() == pytest.approx(-(1 - 2) / 2 + 2.0 * 0.2)


def test_conjugate_gradient_matches_direct_solve():
    rng = np.random.default_rng(1)
    m = torch.tensor(rng.normal(size=(6, 6)))
    A = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.tensor(rng.normal(size=6))
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b))


def test_line_search_rejects_a_worsening_step_and_keeps_the_old_parameters():
    def surrogate_and_kl(x):
        return (-float(x @ x), 0.0)  # maximised at 0; every step along +x worsens it

    x0 = torch.tensor([1.0, 1.0])
    x, steps = backtracking_line_search(
        surrogate_and_kl, x0, torch.tensor([1.0, 0.0]), max_kl=0.01, shrink=0.5, iters=5
    )
    assert torch.equal(x, x0) and steps == 5


def test_line_search_shrinks_until_kl_is_within_bounds():
    # surrogate improves along the step, KL grows as |x - x0|^2: full step KL 1, accepted at shrink^3 (KL 1/64)
    x0 = torch.zeros(1)

    def surrogate_and_kl(x):
        return (float(x[0]), float(x[0] ** 2))

    x, steps = backtracking_line_search(surrogate_and_kl, x0, torch.ones(1), max_kl=0.02, shrink=0.5, iters=10)
    assert steps == 4 and x.item() == pytest.approx(0.125)


def test_reinforce_and_a2c_losses():
    logp, adv = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 0.5])
    assert reinforce_loss(logp, adv).item() == pytest.approx(-(-1.0 - 1.0) / 2)
    total, pg, v, ent = actor_critic_loss(
        logp,
        torch.tensor([0.5, 0.7]),
        torch.tensor([1.0, 0.0]),
        adv,
        torch.tensor([2.0, 1.0]),
        ent_coef=0.1,
        vf_coef=0.5,
    )
    assert pg.item() == pytest.approx(1.0)
    assert v.item() == pytest.approx(0.5 * (1 + 1) / 2)
    assert total.item() == pytest.approx(1.0 - 0.1 * 0.6 + 0.5 * 0.5)


def small_policy_batch():
    import gymnasium as gym

    from algos.networks import make_agent
    from algos.rollout import Batch
    from algos.settings import NetSettings

    torch.manual_seed(0)
    agent = make_agent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4), NetSettings([8], "tanh", False))
    obs = torch.randn(32, 3)
    with torch.no_grad():
        actions, logprobs, values = agent.act(obs)
    advantages = torch.randn(32)
    return agent, Batch(obs, actions, logprobs, values, advantages, advantages + values, 1), advantages


def test_trpo_surrogate_is_the_mean_advantage_and_kl_zero_at_the_old_policy():
    agent, batch, advantages = small_policy_batch()
    with torch.no_grad():
        old = agent.distribution(batch.obs)
    surrogate, kl = surrogate_and_kl(agent, batch, advantages, old)
    assert surrogate.item() == pytest.approx(advantages.mean().item(), abs=1e-6)
    assert kl.item() == pytest.approx(0.0, abs=1e-7)


def test_fisher_vector_product_is_the_kl_hessian_times_v_plus_damping():
    """At the old parameters the Hessian of the mean KL is the Fisher matrix; compare F v with a central finite
    difference of the KL's gradient along v."""
    agent, batch, _ = small_policy_batch()
    params = agent.actor_parameters()
    with torch.no_grad():
        old = agent.distribution(batch.obs)
    v = torch.randn(sum(p.numel() for p in params))

    def kl_gradient_at(shift: float) -> torch.Tensor:
        with torch.no_grad():
            for p, chunk in zip(params, (shift * v).split([p.numel() for p in params])):
                p.add_(chunk.view_as(p))
        grad = flat_grad(mean_kl(agent, batch.obs, old), params)
        with torch.no_grad():
            for p, chunk in zip(params, (shift * v).split([p.numel() for p in params])):
                p.sub_(chunk.view_as(p))
        return grad

    eps = 1e-2
    finite_difference = (kl_gradient_at(eps) - kl_gradient_at(-eps)) / (2 * eps)
    fvp = fisher_vector_product(lambda: mean_kl(agent, batch.obs, old), params, v, damping=0.1)
    torch.testing.assert_close(fvp, finite_difference + 0.1 * v, rtol=2e-2, atol=2e-4)

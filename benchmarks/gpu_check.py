"""One pass over what a GPU changes, in three parts, written to results/gpu_check.md with the device named:

(a) Agreement: for every algorithm, the agent (or SeqGAN's generator and discriminator) is built on the CPU from a
    fixed seed and copied to the GPU; one fixed batch, made on the CPU (a short real rollout of CartPole or of the
    text env, or seeded random Breakout-shaped frames), goes through the algorithm's own loss functions on both
    copies, and every loss value and every parameter gradient are compared (TRPO: its policy gradient g and a
    Fisher-vector product F v as well), in float32 with TF32 off, against a stated tolerance.
(b) PPO-clip on Breakout through the training entry point, steps per second on the GPU beside the same settings on
    the CPU (fewer steps there, every core as a torch thread), read from each run's summary.json.
(c) PPO-clip on a text task (examples/terse_task.py) with a GPT-2-small-sized policy built from `GPT2Config()`
    (124M parameters, random weights, no download): tokens per second of the rollout and of the update, in fp32
    and bf16, beside Hugging Face `generate` (sampling) on the same GPU, model, prompts and response length.

Parts (b) and (c) train in child processes of this one (`--job`), each with stopwatches around the rollout and the
update, so that no part warms another's caches. The whole check is budgeted to 8 minutes on one GPU; a part that
fails or overruns its share is reported as such and the rest still run.

    python -m benchmarks.gpu_check                        # on a machine with a CUDA GPU; writes results/gpu_check.md
    python -m benchmarks.gpu_check --smoke --out /tmp/gpu_check.md   # every part on the CPU at toy sizes (the tests)

Exit status: 0 when every part was measured and (a) agrees, 1 when a part failed or (a) disagrees, 2 without a GPU
(and without --smoke). The speed targets are reported, met or not; they do not change the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.atari_speed import Stopwatch, no_evaluation, time_emulator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "gpu_check.md"
NO_GPU = "benchmarks.gpu_check needs a CUDA GPU; --smoke runs its parts on the CPU"
TEXT_TASK = "examples/terse_task.py:make_task"
RTOL, ATOL = 1e-4, 1e-5  # float32, TF32 off: torch.allclose(gpu, cpu, rtol, atol) for every compared tensor
BREAKOUT_TARGET = 5.0  # GPU steps/s over the CPU run's
GENERATE_TARGET = 0.8  # bf16 rollout tokens/s over `generate`'s
BUDGET_S = 480.0  # the whole check, on one GPU
CPU_RESERVE_S, TEXT_RESERVE_S = 45.0, 60.0  # time kept back for the CPU Breakout run and for each text run
SEED = 1
BREAKOUT_PARTS = {"device": "(b) Breakout, device run", "cpu": "(b) Breakout, CPU run"}


def say(message: str) -> None:
    """A progress line for a remote log."""
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def compose(overrides: list[str]):
    """The config the command line composes from conf/ for these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from algos.registry import store_algorithm_defaults

    store_algorithm_defaults()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


# ------------------------------------------------------------------------------------- (a) CPU-GPU agreement
@dataclass
class Outputs:
    """What one objective yields on one device: `losses` are differentiated with respect to every parameter and
    compared with their gradients; `values` are compared as they are (advantages, TRPO's surrogate); `gradients`
    are vectors compared like parameter gradients (TRPO's g and F v)."""

    losses: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)


Objective = Callable[[Any, Any], Outputs]  # (model, batch on the model's device) -> outputs


@dataclass
class Case:
    algorithm: str
    network: str
    model: Any  # an nn.Module (an agent, or SeqGAN's pair), built on the CPU
    batch: Any  # tensors on the CPU: a dict, or a Batch / EpisodeBatch
    objective: Objective


@dataclass
class Difference:
    abs: float = 0.0  # max |device - cpu|
    rel: float = 0.0  # max |device - cpu| / max |cpu|, per tensor
    agree: bool = True  # torch.allclose(device, cpu, RTOL, ATOL)

    def add(self, device_value: torch.Tensor, cpu_value: torch.Tensor) -> None:
        got, want = device_value.detach().cpu().double(), cpu_value.detach().double()
        gap = float((got - want).abs().max()) if want.numel() else 0.0
        scale = float(want.abs().max()) if want.numel() else 0.0
        self.abs = max(self.abs, gap)
        self.rel = max(self.rel, gap / scale if scale > 0 else (0.0 if gap == 0 else float("inf")))
        self.agree = self.agree and bool(torch.allclose(got, want, rtol=RTOL, atol=ATOL))


@dataclass
class LossComparison:
    """One row of part (a)."""

    algorithm: str
    network: str
    compared: list[str]  # the losses and values compared
    loss: Difference
    gradient: Difference
    tensors: int  # gradient tensors compared

    @property
    def passed(self) -> bool:
        return self.loss.agree and self.gradient.agree


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """Matrix products and convolutions in full float32 on the GPU (TF32 keeps 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.replace(x, **{f.name: to_device(getattr(x, f.name), device) for f in dataclasses.fields(x)})
    return x


def evaluate_outputs(case: Case, device: torch.device) -> tuple[Outputs, dict[str, Sequence[torch.Tensor | None]]]:
    """The objective on a copy of the case's model on `device`, and each loss's gradients (None: unused)."""
    model = copy.deepcopy(case.model).to(device)
    outputs = case.objective(model, to_device(case.batch, device))
    params = [p for p in model.parameters() if p.requires_grad]
    grads: dict[str, Sequence[torch.Tensor | None]] = {
        name: list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
        for name, loss in outputs.losses.items()
    }
    return outputs, grads


def compare_case(case: Case, device: torch.device) -> LossComparison:
    torch.manual_seed(SEED)
    cpu, cpu_grads = evaluate_outputs(case, torch.device("cpu"))
    torch.manual_seed(SEED)
    other, other_grads = evaluate_outputs(case, device)
    loss, gradient, tensors = Difference(), Difference(), 0
    for name in [*cpu.losses, *cpu.values]:
        loss.add({**other.losses, **other.values}[name], {**cpu.losses, **cpu.values}[name])
    for name, grads in cpu_grads.items():
        for want, got in zip(grads, other_grads[name]):
            if want is not None and got is not None:
                gradient.add(got, want)
                tensors += 1
            elif (want is None) != (got is None):
                gradient.agree = False  # a parameter used on one device only
    for name, vector in cpu.gradients.items():
        gradient.add(other.gradients[name], vector)
        tensors += 1
    compared = [*cpu.losses, *cpu.values, *cpu.gradients]
    return LossComparison(case.algorithm, case.network, compared, loss, gradient, tensors)


def perturbed(x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    """`x` plus seeded noise: "old" log-probabilities and values that differ from the current policy's, so ratios
    leave 1 and the clipped terms are exercised."""
    generator = torch.Generator().manual_seed(seed)
    return x + scale * torch.randn(x.shape, generator=generator, dtype=x.dtype)


# -- the algorithms' objectives, each through its own named loss functions
def pg_objective(agent, b) -> Outputs:
    from algos.losses import normalize_advantages, value_loss
    from algos.pg import reinforce_loss

    logprob, _, _ = agent.evaluate(b.obs, b.actions)
    return Outputs(
        {
            "reinforce_loss": reinforce_loss(logprob, normalize_advantages(b.advantages)),
            "value_loss": value_loss(agent.value(b.obs), b.returns),
        }
    )


def a2c_objective(agent, b) -> Outputs:
    from algos.a2c import actor_critic_loss

    logprob, entropy, values = agent.evaluate(b.obs, b.actions)
    total, *_ = actor_critic_loss(logprob, entropy, values, b.advantages, b.returns, ent_coef=0.01, vf_coef=0.5)
    return Outputs({"actor_critic_loss": total})


def trpo_objective(agent, b) -> Outputs:
    from algos.losses import normalize_advantages, value_loss
    from algos.trpo import fisher_vector_product, flat_grad, mean_kl, surrogate_and_kl

    params = agent.actor_parameters()
    advantages = normalize_advantages(b["batch"].advantages)
    with torch.no_grad():
        old_dist = agent.distribution(b["batch"].obs)
    surrogate, kl = surrogate_and_kl(agent, b["batch"], advantages, old_dist)
    g = flat_grad(surrogate, params)
    fvp = fisher_vector_product(partial(mean_kl, agent, b["batch"].obs, old_dist), params, b["v"], damping=0.1)
    return Outputs(
        {"value_loss": value_loss(agent.value(b["batch"].obs), b["batch"].returns)},
        values={"surrogate_and_kl": torch.stack([surrogate.detach(), kl.detach()])},
        gradients={"surrogate gradient g": g, "fisher_vector_product F v": fvp},
    )


def ppo_penalty_objective(agent, b) -> Outputs:
    from torch.distributions import Categorical, kl_divergence

    from algos.losses import normalize_advantages, value_loss
    from algos.ppo_penalty import kl_penalty_loss

    batch = b["batch"]
    logprob, _, values = agent.evaluate(batch.obs, batch.actions)
    kl = kl_divergence(Categorical(logits=b["old_logits"]), agent.distribution(batch.obs))
    ratio = (logprob - batch.logprobs).exp()
    return Outputs(
        {
            "kl_penalty_loss": kl_penalty_loss(ratio, normalize_advantages(batch.advantages), kl, beta=1.0),
            "value_loss": value_loss(values, batch.returns),
        }
    )


def ppo_clip_objective(agent, b) -> Outputs:
    from algos.losses import normalize_advantages, value_loss
    from algos.ppo_clip import clipped_surrogate_loss

    logprob, entropy, values = agent.evaluate(b.obs, b.actions)
    ratio = (logprob - b.logprobs).exp()
    return Outputs(
        {
            "clipped_surrogate_loss": clipped_surrogate_loss(ratio, normalize_advantages(b.advantages), 0.2),
            "value_loss (clipped)": value_loss(values, b.returns, b.values, clip_coef=0.2),
            "entropy": entropy.mean(),
        }
    )


def grpo_objective(agent, b) -> Outputs:
    from algos.grpo import Hyperparameters, group_relative_advantages, grpo_loss

    batch, group_size = b, b.group_size
    hp = Hyperparameters(group_size=group_size, kl_coef=0.1 if batch.ref_logprobs is not None else 0.0)
    advantages = group_relative_advantages(batch.returns, group_size, scale=True)
    logprob, _, _ = agent.evaluate(batch.obs, batch.actions)
    loss, ref_kl = grpo_loss(
        logprob, batch.logprobs, advantages[batch.episode], batch.ref_logprobs, batch, slice(None), hp
    )
    losses = {"grpo_loss": loss} | ({"k3 KL to the reference": ref_kl} if batch.ref_logprobs is not None else {})
    return Outputs(losses, {"group_relative_advantages": advantages})


def rloo_objective(agent, b) -> Outputs:
    from algos.rloo import leave_one_out_advantages, rloo_loss

    advantages = leave_one_out_advantages(b.returns, b.group_size)
    logprob, _, _ = agent.evaluate(b.obs, b.actions)
    return Outputs(
        {
            "rloo_loss (REINFORCE)": rloo_loss(logprob, b.logprobs, advantages, b, slice(None), None, "token"),
            "rloo_loss (clipped)": rloo_loss(logprob, b.logprobs, advantages, b, slice(None), 0.2, "token"),
            "rloo_loss (sequence-clipped)": rloo_loss(logprob, b.logprobs, advantages, b, slice(None), 0.2, "sequence"),
        },
        {"leave_one_out_advantages": advantages},
    )


def seqgan_objective(model, b) -> Outputs:
    from algos.ppo_clip import clipped_surrogate_loss
    from algos.seqgan import advantages, discriminator_loss, mle_loss, policy_gradient_loss
    from envs.sequences import token_log_likelihoods

    generator, disc = model["generator"], model["discriminator"]
    adv = advantages(b["rewards"], baseline=True)
    log_probs = token_log_likelihoods(generator.logits(b["samples"]), b["samples"])
    return Outputs(
        {
            "mle_loss": mle_loss(generator, b["real"]),
            "policy_gradient_loss": policy_gradient_loss(log_probs, adv),
            "clipped_surrogate_loss (generator_update=ppo)": clipped_surrogate_loss(
                (log_probs - b["old_log_probs"]).exp(), adv, 0.2
            ),
            "discriminator_loss": discriminator_loss(disc, b["sequences"], b["labels"], l2=0.2),
        }
    )


# -- the agents and batches, all made on the CPU
def cartpole_agent_and_envs(num_envs: int):
    import envs
    from algos.networks import make_agent
    from algos.settings import NetSettings

    settings = envs.check_env_settings(compose(["env=cartpole"]).env)
    vector_env = envs.make_vector_env(settings, num_envs, training=True)
    torch.manual_seed(SEED)
    agent = make_agent(
        vector_env.single_observation_space, vector_env.single_action_space, NetSettings([64, 64], "tanh", False)
    )
    return agent, vector_env


def with_old_policy(batch, seed: int):
    """The batch with perturbed "old" log-probabilities and values (see `perturbed`)."""
    changes = {"logprobs": perturbed(batch.logprobs, 0.3, seed)}
    if hasattr(batch, "values"):
        changes["values"] = perturbed(batch.values, 0.3, seed + 1)
    return dataclasses.replace(batch, **changes)


def segment_batch(agent, vector_env, num_steps: int, bootstrap_truncated: bool = True):
    from algos.rollout import Rollout

    torch.manual_seed(SEED)
    rollout = Rollout(vector_env, agent, num_steps, gamma=0.99, seed=SEED, bootstrap_truncated=bootstrap_truncated)
    return with_old_policy(rollout.collect(gae_lambda=0.95), seed=SEED)


def episode_batch(agent, vector_env, group_size: int, max_steps: int):
    from algos.group_rollout import GroupRollout

    torch.manual_seed(SEED)
    rollout = GroupRollout(vector_env, agent, group_size, max_steps, SEED, kl=None, env_name="gpu_check")
    return with_old_policy(rollout.collect(), seed=SEED)


def mlp_cases() -> list[Case]:
    agent, vector_env = cartpole_agent_and_envs(num_envs=4)
    batch = segment_batch(agent, vector_env, num_steps=16)
    with torch.no_grad():
        old_logits = perturbed(agent.distribution(batch.obs).logits, 0.3, SEED + 2)
    n_actor = sum(p.numel() for p in agent.actor_parameters())
    v = torch.randn(n_actor, generator=torch.Generator().manual_seed(SEED + 3))
    groups = episode_batch(agent, vector_env, group_size=4, max_steps=16)
    network = "MLP [64, 64] (CartPole-v1)"
    return [
        Case("pg", network, agent, batch, pg_objective),
        Case("a2c", network, agent, batch, a2c_objective),
        Case("trpo", network, agent, {"batch": batch, "v": v}, trpo_objective),
        Case("ppo_penalty", network, agent, {"batch": batch, "old_logits": old_logits}, ppo_penalty_objective),
        Case("ppo_clip", network, agent, batch, ppo_clip_objective),
        Case("grpo", network, agent, groups, grpo_objective),
        Case("rloo", network, agent, groups, rloo_objective),
    ]


def nature_cnn_case() -> Case:
    import gymnasium as gym

    from algos.networks import make_agent
    from algos.rollout import Batch
    from algos.settings import NetSettings

    torch.manual_seed(SEED)
    agent = make_agent(
        gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(4), NetSettings([64, 64], "tanh", False)
    )
    generator = torch.Generator().manual_seed(SEED)
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=generator)
    actions, logprobs, values = agent.act(obs)
    advantages = torch.randn(8, generator=generator)
    batch = Batch(obs, actions, logprobs, values, advantages, values + advantages, num_envs=4)
    return Case(
        "ppo_clip", "Nature CNN (Breakout-shaped uint8 frames)", agent, with_old_policy(batch, SEED), ppo_clip_objective
    )


def text_cases() -> list[Case]:
    from benchmarks.text_speed import build_tiny_model
    from envs.text.agent import TextAgent
    from envs.text.env import TokenVectorEnv
    from envs.text.loading import load_causal_lm
    from envs.text.tasks import load_task

    with tempfile.TemporaryDirectory(prefix="gpu-check-tiny-lm-") as folder:
        build_tiny_model(Path(folder))
        torch.manual_seed(SEED)
        lm, tokenizer = load_causal_lm(folder)
        reference, _ = load_causal_lm(folder)
    agent = TextAgent(lm, len(tokenizer))
    task = load_task(str(ROOT / TEXT_TASK), None)

    def text_env(reference_model=None) -> TokenVectorEnv:
        return TokenVectorEnv(task, tokenizer, 4, max_prompt_tokens=8, max_new_tokens=6, reference=reference_model)

    segments = segment_batch(agent, text_env(), num_steps=8, bootstrap_truncated=False)
    groups = episode_batch(agent, text_env(reference), group_size=2, max_steps=6)
    network = "text agent: tiny GPT-2 (2 layers, 32 units) + value head"
    return [
        Case("ppo_clip", network, agent, segments, ppo_clip_objective),
        Case("grpo", network, agent, groups, grpo_objective),
    ]


def seqgan_case() -> Case:
    from algos.discriminator import Discriminator
    from envs.sequences import LSTMLanguageModel, generate, token_log_likelihoods

    vocab, length, batch = 16, 8, 8
    torch.manual_seed(SEED)
    generator = LSTMLanguageModel(vocab, 16, 16, start_token=0)
    disc = Discriminator(vocab, length, 16, [1, 2, 4], [8, 8, 8], dropout=0.25).eval()  # eval: no dropout
    real = torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(SEED))
    samples = generate(generator, batch, length)
    rewards = torch.rand(batch, length, generator=torch.Generator().manual_seed(SEED + 1))  # stand-ins for Q's D(Y)
    with torch.no_grad():
        old_log_probs = perturbed(token_log_likelihoods(generator.logits(samples), samples), 0.3, SEED)
    data = {
        "real": real,
        "samples": samples,
        "rewards": rewards,
        "old_log_probs": old_log_probs,
        "sequences": torch.cat([real, samples]),
        "labels": torch.cat([torch.ones(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)]),
    }
    model = nn.ModuleDict({"generator": generator, "discriminator": disc})
    return Case("seqgan", "LSTM generator + CNN discriminator", model, data, seqgan_objective)


def loss_cases() -> list[Case]:
    cases = mlp_cases()
    ppo_clip_at = next(i for i, c in enumerate(cases) if c.algorithm == "ppo_clip") + 1
    text = text_cases()
    cases[ppo_clip_at:ppo_clip_at] = [nature_cnn_case(), text[0]]
    grpo_at = next(i for i, c in enumerate(cases) if c.algorithm == "grpo") + 1
    cases.insert(grpo_at, text[1])
    return [*cases, seqgan_case()]


def compare_losses(device: str | torch.device) -> list[LossComparison]:
    """Part (a): every algorithm's losses and gradients on one fixed batch, on the CPU and on `device` (with
    device="cpu", the CPU against itself, which must agree exactly). TF32 is off throughout."""
    target = torch.device(device)
    with tf32_off():
        return [compare_case(case, target) for case in loss_cases()]


# ------------------------------------------------------------------------------- (b), (c) training in a child
class UpdateClock:
    """Per update: the rollout's seconds (inside Rollout.collect) and the update's (from the rollout's end to the
    algorithm's end_update, whose scalars were read with .item(), so the GPU has finished)."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.rollout_s: list[float] = []
        self.update_s: list[float] = []
        self.rollout_end: float | None = None

    def wrap_collect(self, collect):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            batch = collect(*args, **kwargs)
            self.sync()
            self.rollout_end = time.perf_counter()
            self.rollout_s.append(self.rollout_end - start)
            return batch

        return timed

    def wrap_end_update(self, end_update):
        def timed(*args, **kwargs):
            self.sync()
            if self.rollout_end is not None:
                self.update_s.append(time.perf_counter() - self.rollout_end)
            return end_update(*args, **kwargs)

        return timed


def no_checkpoint(self, next_update: int, algo_state: dict) -> None:
    pass


def training_job(spec: dict) -> dict:
    """Runs in a child process: PPO-clip through the training entry point (ppo_clip.train on the composed config,
    what `python -m algos` calls), with stopwatches patched over the rollout, the update, the policy's forward in
    rollouts, the emulator and the text env's reference model; no final evaluation and no checkpoint (speed only)."""
    from algos import networks, ppo_clip, rollout, run

    device = torch.device(spec["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    watch, clock = Stopwatch(sync), UpdateClock(sync)
    # patched for this process only: it runs one job and exits
    time_emulator(watch)
    rollout.Rollout.collect = clock.wrap_collect(rollout.Rollout.collect)  # type: ignore[method-assign]
    run.Run.end_update = clock.wrap_end_update(run.Run.end_update)  # type: ignore[method-assign]
    networks.Agent.act = watch.wrap("policy_forward", networks.Agent.act)  # type: ignore[method-assign]
    if spec["kind"] == "text":  # transformers is imported only here
        from envs.text import agent as text_agent
        from envs.text import env as text_env

        text_agent.TextAgent.act = watch.wrap("policy_forward", text_agent.TextAgent.act)  # type: ignore[method-assign]
        text_env.TokenBatch.reference_logprobs = watch.wrap(  # type: ignore[method-assign]
            "reference_model", text_env.TokenBatch.reference_logprobs
        )
    run.evaluate_policy = no_evaluation
    run.Run.save_checkpoint = no_checkpoint  # type: ignore[method-assign]
    run_dir = Path(tempfile.mkdtemp(prefix=f"gpu-check-{spec['kind']}-"))
    cfg = compose(
        [
            "algo=ppo_clip",
            f"device={spec['device']}",
            f"precision={spec['precision']}",
            f"torch_threads={spec['threads']}",
            f"seed={SEED}",
            "eval_episodes=1",
            "checkpoint_interval_s=1e9",
            "progress=true",  # a plain line on stderr every 30 s (not a terminal)
            "progress_interval_s=30",
            f"run_root={run_dir}",
            *spec["overrides"],
        ]
    )
    try:
        ppo_clip.train(cfg, run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    result = {
        "summary": {k: summary[k] for k in ("total_env_steps", "wall_clock_s", "steps_per_second", "device")},
        "rollout_s": clock.rollout_s,
        "update_s": clock.update_s,
        "seconds": watch.seconds,
        "num_envs": int(cfg.env.num_envs),
        "num_steps": int(cfg.algo.num_steps),
        "update_epochs": int(cfg.algo.update_epochs),
        "num_minibatches": int(cfg.algo.num_minibatches),
        "threads": spec["threads"],
    }
    if spec["kind"] == "text":
        result |= {"max_new_tokens": int(cfg.env.max_new_tokens), "generate_s": generate_seconds(cfg, spec, sync)}
    return result


def generate_seconds(cfg, spec: dict, sync: Callable[[], None], repeats: int = 4) -> list[float]:
    """Hugging Face `generate` on the same device, model, prompts (the task's, cycled to env.num_envs rows) and
    response length (exactly env.max_new_tokens), sampling from the full distribution (top_k=0), with the KV cache;
    in bf16 through the same autocast as the text agent (float32 weights). The first call is a warm-up."""
    from core.devices import placement
    from envs.text.loading import load_causal_lm
    from envs.text.tasks import load_task
    from envs.text.tokens import left_padded

    where = placement(spec["device"], spec["precision"])
    lm, tokenizer = load_causal_lm(cfg.env.policy_model)
    lm.to(where.device)
    prompts = load_task(cfg.env.task, None).prompts
    _, ids, mask, pad = left_padded(tokenizer, [prompts[i % len(prompts)] for i in range(cfg.env.num_envs)])
    ids, mask = ids.to(where.device), mask.to(where.device)
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        with torch.no_grad(), where.autocast():
            lm.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                top_k=0,
                max_new_tokens=cfg.env.max_new_tokens,
                min_new_tokens=cfg.env.max_new_tokens,
                pad_token_id=pad,
                use_cache=True,
            )
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


class JobFailed(RuntimeError):
    pass


def run_job(spec: dict, timeout_s: float) -> dict:
    """`training_job(spec)` in a fresh process. Its stderr (progress lines, warnings) is echoed to ours as it comes,
    and the last lines of it name a failure; its result is the last line of its stdout."""
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gpu_check", "--job", json.dumps(spec)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        tail: deque[str] = deque(maxlen=3)
        echo = threading.Thread(target=echo_lines, args=(process.stderr, tail), daemon=True)
        echo.start()
        try:
            code = process.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise JobFailed(f"did not finish within its share of the 8-minute budget ({timeout_s:.0f} s)") from None
        finally:
            echo.join(timeout=10)
        if code != 0:
            raise JobFailed(f"exited {code}: {' / '.join(tail)}")
        stdout.seek(0)
        return json.loads(stdout.read().strip().splitlines()[-1])


def echo_lines(stream, tail: deque[str]) -> None:
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.strip():
            tail.append(line.strip())


class Budget:
    """Seconds left of the whole check; each child gets what is left less what the parts after it need."""

    def __init__(self, total_s: float):
        self.deadline = time.perf_counter() + total_s

    def timeout(self, reserve_s: float) -> float:
        return self.deadline - time.perf_counter() - reserve_s


def after_warm_up(xs: list[float]) -> list[float]:
    """The updates after the first (CUDA start-up, kernel selection), when there are any."""
    return xs[1:] if len(xs) > 1 else xs


def breakout_speed(
    device: str, steps: int, threads: int, overrides: tuple[str, ...] = (), timeout_s: float = BUDGET_S
) -> dict:
    """Part (b): PPO-clip on Breakout (conf/tuned/ppo_clip_atari.yaml's settings) for `steps` environment steps on
    `device`, steps per second from its summary.json."""
    spec = {
        "kind": "breakout",
        "device": device,
        "precision": "fp32",
        "threads": threads,
        "overrides": ["env=breakout", f"total_timesteps={steps}", *overrides],
    }
    result = run_job(spec, timeout_s)
    summary, seconds = result["summary"], result["seconds"]
    rollout = sum(result["rollout_s"])
    return {
        "device": device,
        "device_name": summary["device"]["name"],
        "threads": threads,
        "steps": summary["total_env_steps"],
        "wall_s": summary["wall_clock_s"],
        "sps": summary["steps_per_second"],
        "rollout_share": rollout / summary["wall_clock_s"],
        "emulator_share": seconds.get("emulator", 0.0) / summary["wall_clock_s"],
        "policy_forward_share": seconds.get("policy_forward", 0.0) / summary["wall_clock_s"],
        "update_share": sum(result["update_s"]) / summary["wall_clock_s"],
    }


def text_speed(
    device: str,
    precision: str,
    model_folder: str,
    overrides: tuple[str, ...] = (),
    updates: int = 3,
    timeout_s: float = BUDGET_S,
) -> dict:
    """Part (c): PPO-clip on the terse task with the policy in `model_folder`, for `updates` updates (the first a
    warm-up, not counted); tokens per second of the rollout (env.num_envs * algo.num_steps tokens each) and of the
    update (the same tokens, algo.update_epochs passes), and of `generate`."""
    env_and_algo = ["env=text", f"env.task={TEXT_TASK}", f"env.policy_model={model_folder}", *overrides]
    cfg = compose(["algo=ppo_clip", *env_and_algo])
    tokens = int(cfg.env.num_envs) * int(cfg.algo.num_steps)
    spec = {
        "kind": "text",
        "device": device,
        "precision": precision,
        "threads": 1,
        "overrides": [*env_and_algo, f"total_timesteps={tokens * updates}"],
    }
    result = run_job(spec, timeout_s)
    rollout_s, update_s = after_warm_up(result["rollout_s"]), after_warm_up(result["update_s"])
    seconds, all_rollout_s = result["seconds"], sum(result["rollout_s"])
    generate_tokens = result["num_envs"] * result["max_new_tokens"]
    rollout_tps = tokens * len(rollout_s) / sum(rollout_s)
    reference_share = seconds.get("reference_model", 0.0) / all_rollout_s
    return {
        "device": device,
        "device_name": result["summary"]["device"]["name"],
        "precision": precision,
        "tokens_per_update": tokens,
        "updates_timed": len(rollout_s),
        "num_envs": result["num_envs"],
        "max_new_tokens": result["max_new_tokens"],
        "update_passes": f"{result['update_epochs']} epochs x {result['num_minibatches']} minibatches",
        "rollout_tps": rollout_tps,
        "update_tps": tokens * len(update_s) / sum(update_s),
        "generate_tps": generate_tokens / statistics.median(result["generate_s"]),
        "policy_forward_share": seconds.get("policy_forward", 0.0) / all_rollout_s,
        "reference_share": reference_share,
        "rollout_tps_without_reference": rollout_tps / (1 - reference_share) if reference_share < 1 else float("nan"),
    }


def build_gpt2_small(folder: Path) -> int:
    """`GPT2Config()`'s defaults (12 layers, 768 units, 12 heads, a 50,257-token vocabulary, 1,024 positions),
    random weights, with the tiny model's small BPE tokenizer (benchmarks/text_speed.py): the model's vocabulary is
    larger than the tokenizer's, which the text agent allows. Returns the parameter count."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from benchmarks.text_speed import build_tiny_model

    build_tiny_model(folder)  # the tokenizer, and a tiny model that the one below replaces
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def build_tiny_lm(folder: Path) -> int:
    """The tests' 2-layer GPT-2 (smoke runs); returns the parameter count."""
    from benchmarks.text_speed import build_tiny_model
    from envs.text.loading import load_causal_lm

    build_tiny_model(folder)
    return sum(p.numel() for p in load_causal_lm(folder)[0].parameters())


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    smoke: bool
    device: str  # where the "GPU" side runs: cuda, or cpu in a smoke run
    gpu_steps: int
    cpu_steps: int
    cpu_threads: int
    breakout_overrides: tuple[str, ...]
    text_overrides: tuple[str, ...]
    precisions: tuple[str, ...]
    text_updates: int


def make_plan(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan(
            smoke=True,
            device="cpu",
            gpu_steps=args.gpu_steps or 64,
            cpu_steps=args.cpu_steps or 64,
            cpu_threads=1,  # a smoke run shares its machine (the test suite): one thread, no oversubscription
            breakout_overrides=("algo.num_steps=16", "env.num_envs=4", "algo.update_epochs=1"),
            text_overrides=("env.num_envs=4", "env.max_new_tokens=6", "env.max_prompt_tokens=8", "algo.num_steps=8"),
            precisions=("fp32",),
            text_updates=2,
        )
    return Plan(
        smoke=False,
        device="cuda",
        gpu_steps=args.gpu_steps or 200_000,
        cpu_steps=args.cpu_steps or 20_000,
        cpu_threads=os.cpu_count() or 1,
        breakout_overrides=(),
        text_overrides=(),
        precisions=("fp32", "bf16"),
        text_updates=args.text_updates,
    )


@dataclass
class Results:
    losses: list[LossComparison] | None = None
    breakout: dict[str, dict] = field(default_factory=dict)  # "device", "cpu"
    text: dict[str, dict] = field(default_factory=dict)  # by precision
    model_parameters: int | None = None
    errors: dict[str, str] = field(default_factory=dict)  # part -> what went wrong
    seconds: dict[str, float] = field(default_factory=dict)  # part -> wall seconds

    def ok(self) -> bool:
        return not self.errors and self.losses is not None and all(row.passed for row in self.losses)


@contextlib.contextmanager
def part(results: Results, name: str) -> Iterator[None]:
    """A part's failure is recorded, and the check goes on with the next."""
    start = time.perf_counter()
    say(f"{name}: starting")
    try:
        yield
    except Exception as err:  # any failure of one part: report it, run the others
        results.errors[name] = f"{type(err).__name__}: {err}".replace("|", "/").replace("\n", " / ")
        say(f"{name}: FAILED: {results.errors[name]}")
    finally:
        results.seconds[name] = results.seconds.get(name, 0.0) + time.perf_counter() - start
        say(f"{name}: done in {time.perf_counter() - start:.0f} s")


def run_check(plan: Plan) -> Results:
    results, budget = Results(), Budget(BUDGET_S)
    text_reserve = TEXT_RESERVE_S * len(plan.precisions)
    with part(results, "(a) losses"):
        results.losses = compare_losses(plan.device)
        failing = [f"{r.algorithm}/{r.network}" for r in results.losses if not r.passed]
        say(
            f"(a) {len(results.losses) - len(failing)}/{len(results.losses)} agree"
            + (f"; not: {failing}" if failing else "")
        )
    with part(results, BREAKOUT_PARTS["device"]):
        results.breakout["device"] = breakout_speed(
            plan.device, plan.gpu_steps, 1, plan.breakout_overrides, budget.timeout(text_reserve + CPU_RESERVE_S)
        )
        say(f"(b) device run on {plan.device}: {results.breakout['device']['sps']:.0f} steps/s")
    with part(results, BREAKOUT_PARTS["cpu"]):
        results.breakout["cpu"] = breakout_speed(
            "cpu", plan.cpu_steps, plan.cpu_threads, plan.breakout_overrides, budget.timeout(text_reserve)
        )
        say(f"(b) CPU run, torch_threads={plan.cpu_threads}: {results.breakout['cpu']['sps']:.0f} steps/s")
    with tempfile.TemporaryDirectory(prefix="gpu-check-lm-") as folder:
        with part(results, "(c) model"):
            build = build_tiny_lm if plan.smoke else build_gpt2_small
            results.model_parameters = build(Path(folder))
            say(f"(c) policy model: {results.model_parameters:,} parameters")
        for i, precision in enumerate(plan.precisions):
            with part(results, f"(c) text {precision}"):
                reserve = TEXT_RESERVE_S * (len(plan.precisions) - i - 1) + 10
                row = text_speed(
                    plan.device, precision, folder, plan.text_overrides, plan.text_updates, budget.timeout(reserve)
                )
                results.text[precision] = row
                say(
                    f"(c) {precision}: rollout {row['rollout_tps']:.0f} tokens/s, update {row['update_tps']:.0f}, "
                    f"generate {row['generate_tps']:.0f}"
                )
    return results


# ------------------------------------------------------------------------------------------------ the report
def device_lines(plan: Plan) -> list[str]:
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()} kernels)"
    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    if plan.smoke:
        return [f"Device: **CPU only** (smoke run); {cpu}; {versions}."]
    props = torch.cuda.get_device_properties(0)
    return [
        f"Device: **{torch.cuda.get_device_name(0)}** (cuda:0, {props.total_memory / 2**30:.0f} GiB, compute "
        f"capability {props.major}.{props.minor}); {cpu}; {versions}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}."
    ]


def fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def losses_section(results: Results, plan: Plan) -> list[str]:
    lines = [
        f"## (a) One fixed batch on the CPU and on {plan.device}: losses and gradients",
        "",
        f"Each agent is built on the CPU (seed {SEED}) and copied to {plan.device}; one batch made on the CPU (a real "
        f"rollout of CartPole-v1 or of the text env with the terse task; seeded random uint8 frames for the Nature "
        f"CNN; for SeqGAN seeded random real sequences, the generator's samples and seeded rewards in [0, 1) "
        f'standing in for Q; "old" log-probabilities and values perturbed by seeded noise so that ratios leave 1 '
        f"and the clipped terms act) goes through the algorithm's own loss functions on both copies. Float32 with "
        f"TF32 off (`torch.backends.cuda.matmul.allow_tf32 = False`, `torch.backends.cudnn.allow_tf32 = False`); "
        f"SeqGAN's discriminator in eval mode (no dropout). Tolerance: `torch.allclose(gpu, cpu, rtol={RTOL:g}, "
        f"atol={ATOL:g})` for every loss, value and gradient tensor; relative difference = max |gpu - cpu| / "
        f"max |cpu| per tensor.",
        "",
    ]
    if results.losses is None:
        return [*lines, f"Not measured: {results.errors.get('(a) losses', 'not run')}.", ""]
    lines += [
        "| algorithm | network | compared | max loss diff (abs / rel) | max gradient diff (abs / rel) | "
        "gradient tensors | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results.losses:
        lines.append(
            f"| {r.algorithm} | {r.network} | {', '.join(r.compared)} | {fmt(r.loss.abs)} / {fmt(r.loss.rel)} | "
            f"{fmt(r.gradient.abs)} / {fmt(r.gradient.rel)} | {r.tensors} | {'pass' if r.passed else '**FAIL**'} |"
        )
    passed = sum(r.passed for r in results.losses)
    return [*lines, "", f"{passed} of {len(results.losses)} agree within the tolerance.", ""]


def breakout_section(results: Results, plan: Plan) -> list[str]:
    lines = [
        "## (b) PPO-clip on Breakout: steps per second",
        "",
        "`python -m algos algo=ppo_clip env=breakout` settings (conf/tuned/ppo_clip_atari.yaml: 8 environments x 128 "
        "steps, 4 epochs of 4 minibatches, the Nature CNN) through `ppo_clip.train`, each run in its own process, no "
        "final evaluation; steps/s from summary.json (environment steps / training wall time). The device run "
        f"(device={plan.device}) keeps the config's torch_threads=1 (the network runs on the device); the CPU run "
        f"takes torch_threads={plan.cpu_threads}"
        f"{' (one thread in a smoke run)' if plan.smoke else ', every core,'} and fewer steps (--cpu-steps).",
        "",
        "| run | device | torch threads | env steps | wall (s) | steps/s | rollout | of it: emulator | policy forward "
        "| update |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("device", "cpu"):
        r = results.breakout.get(key)
        name = f"device run ({plan.device})" if key == "device" else "CPU run"
        if r is None:
            error = results.errors.get(BREAKOUT_PARTS[key], "not run")
            lines.append(f"| {name} | not measured: {error} | | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['device_name']} | {r['threads']} | {r['steps']:,} | {r['wall_s']:.1f} | {r['sps']:.0f} | "
            f"{r['rollout_share']:.0%} | {r['emulator_share']:.0%} | {r['policy_forward_share']:.0%} | "
            f"{r['update_share']:.0%} |"
        )
    lines += [
        "",
        "Shares are of each run's wall time. On a GPU the run is in torch's deterministic mode with warnings only, "
        "as every run there is (algos/run.py, seed_everything); the CPU run's steps/s is over fewer steps, so its "
        "start-up weighs a little more in it.",
        *overrides_line(plan.breakout_overrides),
        "",
    ]
    return lines


def overrides_line(overrides: tuple[str, ...]) -> list[str]:
    return ["", f"This run's overrides of those settings: `{' '.join(overrides)}`."] if overrides else []


def breakout_ratio(results: Results) -> float | None:
    if "device" in results.breakout and "cpu" in results.breakout:
        return results.breakout["device"]["sps"] / results.breakout["cpu"]["sps"]
    return None


def text_section(results: Results, plan: Plan) -> list[str]:
    n = results.model_parameters
    size = f"{n:,} parameters ({n / 1e6:.1f}M)" if n else "not built"
    model = "the tests' tiny GPT-2 (2 layers)" if plan.smoke else "GPT-2 small from `GPT2Config()` defaults"
    lines = [
        "## (c) PPO-clip on a text task: tokens per second",
        "",
        f"Policy: {model}, random weights, {size}, with the tiny model's 300-token BPE tokenizer (the policy acts "
        f"over those 300 tokens). `env=text env.task={TEXT_TASK}` (a programmatic reward; the KL penalty's "
        f"reference model, a second copy of the policy, runs a forward over each whole sequence every step), "
        f"`algo=ppo_clip` defaults. Rollout tokens/s = env.num_envs x algo.num_steps per Rollout.collect; update "
        f"tokens/s = the same tokens over the update that follows (all its epochs and minibatches); both over the "
        f"updates after the first (a warm-up). `generate`: `model.generate(do_sample=True, top_k=0, "
        f"min_new_tokens = max_new_tokens = env.max_new_tokens)` on the task's prompts cycled to env.num_envs rows, "
        f"on the same device, median of 3 after a warm-up; bf16 is the agent's own autocast (float32 weights) "
        f"around both.",
        "",
        "| precision | rows x new tokens | rollout tokens/s | update tokens/s | `generate` tokens/s | rollout / "
        "generate | rollout share: policy forward | rollout share: reference model | rollout tokens/s without the "
        "reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for precision in plan.precisions:
        r = results.text.get(precision)
        if r is None:
            lines.append(f"| {precision} | not measured: {results.errors.get(f'(c) text {precision}', 'not run')} |")
            continue
        lines.append(
            f"| {precision} | {r['num_envs']} x {r['max_new_tokens']} | {r['rollout_tps']:.0f} | "
            f"{r['update_tps']:.0f} | {r['generate_tps']:.0f} | {r['rollout_tps'] / r['generate_tps']:.2f} | "
            f"{r['policy_forward_share']:.0%} | {r['reference_share']:.0%} | "
            f"{r['rollout_tps_without_reference']:.0f} |"
        )
    if results.text:
        r = next(iter(results.text.values()))
        lines += [
            "",
            f"{r['tokens_per_update']} tokens per update, {r['updates_timed']} update(s) timed; the update is "
            f"{r['update_passes']}.",
            *overrides_line(plan.text_overrides),
        ]
    return [*lines, ""]


def targets_section(results: Results, plan: Plan) -> list[str]:
    ratio = breakout_ratio(results)
    bf16 = results.text.get("bf16")
    generate_ratio = bf16["rollout_tps"] / bf16["generate_tps"] if bf16 else None
    if plan.smoke:
        bf16_measured = "n/a (fp32 only on the CPU)"
    elif bf16 is None:
        bf16_measured = "not measured"
    else:
        without = bf16["rollout_tps_without_reference"] / bf16["generate_tps"]
        bf16_measured = f"{generate_ratio:.2f}x (the rollout less its reference-model time: {without:.2f}x)"

    def verdict(value: float | None, target: float) -> str:
        if plan.smoke:
            return "n/a (smoke run on the CPU)"
        if value is None:
            return "not measured"
        return "**met**" if value >= target else "**not met**"

    agree = None if results.losses is None else all(r.passed for r in results.losses)
    return [
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| (a) every algorithm's losses and gradients agree, rtol {RTOL:g} / atol {ATOL:g} | "
        f"{'not measured' if agree is None else ('all agree' if agree else 'some differ')} | "
        f"{'not measured' if agree is None else ('**met**' if agree else '**not met**')} |",
        f"| (b) Breakout PPO steps/s on the GPU >= {BREAKOUT_TARGET:g}x the CPU run's | "
        f"{'not measured' if ratio is None else f'{ratio:.2f}x'} | {verdict(ratio, BREAKOUT_TARGET)} |",
        f"| (c) bf16 rollout tokens/s >= {GENERATE_TARGET:g}x `generate`'s | {bf16_measured} | "
        f"{verdict(generate_ratio, GENERATE_TARGET)} |",
        "",
    ]


def report(results: Results, plan: Plan, command: str) -> str:
    title = "# GPU check: CPU-GPU agreement, Breakout and text speed"
    smoke = (
        [
            "**SMOKE RUN on the CPU, at toy sizes: no GPU was used, and no number here is a GPU measurement.** It "
            "checks that every part of the script runs.",
            "",
        ]
        if plan.smoke
        else []
    )
    timing = ", ".join(f"{name} {s:.0f} s" for name, s in results.seconds.items())
    errors = [f"- {name}: {error}" for name, error in results.errors.items()]
    return "\n".join(
        [
            title,
            "",
            *smoke,
            f"Command: `{command}`  ",
            *device_lines(plan),
            f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; part times: {timing}.",
            "",
            *targets_section(results, plan),
            *losses_section(results, plan),
            *breakout_section(results, plan),
            *text_section(results, plan),
            *(["## Failures", "", *errors, ""] if errors else []),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes, fp32 only")
    parser.add_argument("--out", help=f"the report (default {DEFAULT_OUT.relative_to(ROOT)}; smoke: a temp file)")
    parser.add_argument("--cpu-steps", type=int, help="Breakout steps of the CPU run (default 20000)")
    parser.add_argument("--gpu-steps", type=int, help="Breakout steps of the GPU run (default 200000)")
    parser.add_argument("--text-updates", type=int, default=4, help="PPO updates per text run, the first a warm-up")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(training_job(json.loads(args.job))))
        return
    if not args.smoke and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        sys.exit(2)
    plan = make_plan(args)
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.gettempdir()) / "gpu_check_smoke.md" if args.smoke else DEFAULT_OUT)
    )
    say(f"{'smoke run on the CPU' if plan.smoke else 'on ' + torch.cuda.get_device_name(0)}; report: {out}")
    results = run_check(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(results, plan, " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]])))
    say(f"wrote {out}")
    sys.exit(0 if results.ok() else 1)


if __name__ == "__main__":
    main()

"""Evaluate a text policy saved by a run, beside best-of-N sampling from the reference model (the baseline any
RL result must beat at equal KL; Stiennon et al. 2020, Gao et al. 2022).

For each policy: proxy reward (the task's reward), gold reward and the fraction the gold scorer judges positive
(compound >= 0.05, VADER's convention), KL(policy || reference) per sequence, perplexity of the samples under the
reference, distinct-1/2, and sample texts. A run's policy is its `checkpoint.pt` (a run of ours) or its `policy/`
folder (a causal LM saved with save_pretrained, as TRL's trainers and envs/text/pipeline/dpo.py leave it).

KL to the reference (`kl_to_reference`): for a policy, E[sum_t log pi(a_t|s_t) - log pi_ref(a_t|s_t)] over its
own samples; for best-of-N, estimated per prompt from the reward ranks of M reference samples (`best_of_n_kl`),
beside the analytic log N - (N - 1) / N (`kl_analytic_bound`), which Beirami et al. 2024 prove is only an upper
bound.

    python -m envs.text.evaluate results/runs/<run folder> --prompts 64 --best-of 1 4 16
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from core.checks import check_settings
from core.errors import ConfigError
from core.files import load_checkpoint
from envs.text.env import Settings
from envs.text.gold import POSITIVE_THRESHOLD
from envs.text.sampling import Samples, proxy_scores, sample
from envs.text.tasks import TextTask, load_task

FORWARD_ROWS = 256  # sequences per teacher-forced forward pass
POOL_PER_N = 4  # default reference samples per prompt for best-of-N, per unit of the largest N


def token_logprobs(lm, token_ids: list[list[int]], prompt_lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x_t | x_<t) of every token after the first, a mask that is 1 on the completion's tokens), both
    (rows, longest - 1): teacher-forced, right-padded, one forward pass, with grad when grad is on. Row r's
    completion tokens are x_t for prompt_lengths[r] <= t < len(token_ids[r]); the prompt's are masked out."""
    width = max(map(len, token_ids))
    ids = torch.tensor([t + [0] * (width - len(t)) for t in token_ids])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in token_ids])
    logp = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    positions = torch.arange(1, width)[None, :]
    completion = (positions >= torch.tensor(prompt_lengths)[:, None]) & mask[:, 1:].bool()
    return logp * completion, completion


@torch.no_grad()
def completion_logprobs(lm, samples: Samples) -> list[np.ndarray]:
    """log p(completion token | prefix) under `lm`, teacher-forced, one array per sample."""
    result = []
    for first in range(0, len(samples.token_ids), FORWARD_ROWS):
        rows = slice(first, first + FORWARD_ROWS)
        logp, completion = token_logprobs(lm, samples.token_ids[rows], samples.prompt_lengths[rows])
        result += [row[keep].numpy() for row, keep in zip(logp, completion)]
    return result


def distinct_n(texts: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_metrics(task: TextTask, samples: Samples, ref_logprobs: list[np.ndarray]) -> dict:
    proxy = proxy_scores(task, samples.prompts, samples.completions)
    tokens = sum(len(lp) for lp in ref_logprobs)
    metrics = {
        "proxy_reward": proxy.mean(),
        "perplexity_under_reference": math.exp(-sum(lp.sum() for lp in ref_logprobs) / max(tokens, 1)),
        "distinct_1": distinct_n(samples.completions, 1),
        "distinct_2": distinct_n(samples.completions, 2),
    }
    if task.gold is not None:
        gold = np.asarray(task.gold(samples.prompts, samples.completions), dtype=float)
        metrics.update(gold_reward=gold.mean(), gold_positive_fraction=(gold >= POSITIVE_THRESHOLD).mean())
    return metrics


def best_of_n_kl(rewards: np.ndarray, n: int) -> float:
    """KL(best-of-n || reference) for one prompt, estimated from the rewards r_1..r_M of M independent reference
    samples of its completions (M >> n), with repeated completions scored alike (`proxy_scores`).

    Best-of-n's distribution (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy",
    sec. 2): with the distinct rewards v_1 < ... < v_L ("levels"), p_l the reference probability of level l and
    F_l = p_1 + ... + p_l its CDF, the best of n draws lies at level l with probability
        q_l = F_l^n - F_{l-1}^n            (F_0 = 0).
    Within a level, ties go to the first draw (argmax), whichever completion it is, so best-of-n keeps the
    reference's proportions inside a level: pi_bon(y) / pi_ref(y) = q_l / p_l for every completion y of level l,
    and the KL over completions is the KL over levels:
        KL(pi_bon || pi_ref) = sum_l q_l log(q_l / p_l).
    A repeated completion is one point of its level, its mass counted as often as it was drawn.

    Estimated by plugging in the empirical p_l = (samples at level l) / M: the exact best-of-n KL of the
    empirical reference, hence never above Beirami et al.'s bound log n - (n - 1) / n (their Theorem 3.1).
    The bound is attained when no completion has a sizeable probability (a continuous reward); the estimate
    falls below it as far as completions repeat (short completions, a peaked reference, tied rewards).
    Bias at finite M: (i) where all M rewards differ the estimate is best-of-n's KL on M equally likely points,
    below the bound by quantisation (data processing): by 0.0026-0.0057 nats at M = 4n for n = 2..64, 0.041 at
    M = n = 64; (ii) a completion of probability p is seen about Mp times, so repeats with Mp below about 1 look
    like distinct completions and the estimate errs towards the bound for them; (iii) as any plug-in KL, it is
    biased at finite M, consistent as M grows."""
    levels, counts = np.unique(np.asarray(rewards, dtype=float), return_counts=True)
    p = counts / counts.sum()
    cdf = np.cumsum(p)
    q = cdf**n - np.concatenate([[0.0], cdf[:-1]]) ** n
    kept = q > 0
    return float(np.sum(q[kept] * np.log(q[kept] / p[kept])))


def kl_analytic_bound(n: int) -> float:
    """log n - (n - 1) / n: the KL of best-of-n when no completion repeats, an upper bound on it in general
    (Beirami et al. 2024, Theorem 3.1; used as the KL itself by Stiennon et al. 2020 and Gao et al. 2022)."""
    return math.log(n) - (n - 1) / n


def best_of_n_rows(
    task: TextTask,
    reference,
    tokenizer,
    prompts: list[str],
    best_of: list[int],
    max_new_tokens: int,
    pool_size: int | None = None,
) -> dict[str, dict]:
    """{row name: metrics} of best-of-N for each N, all from one pool of `pool_size` reference samples per prompt
    (default POOL_PER_N x the largest N): best-of-N picks the highest proxy reward among the pool's first N
    samples of each prompt (N independent draws), and its KL is estimated from the whole pool (`best_of_n_kl`)."""
    if not best_of:
        return {}
    pool_size = pool_size or POOL_PER_N * max(best_of)
    if pool_size < max(best_of) or min(best_of) < 1:
        raise ConfigError(f"best-of-N needs 1 <= N <= the pool of {pool_size} samples per prompt; got {best_of}")
    pool = sample(reference, tokenizer, prompts, pool_size, max_new_tokens)
    proxy = proxy_scores(task, pool.prompts, pool.completions).reshape(len(prompts), pool_size)
    rows = {}
    for n in best_of:
        chosen = pool.rows([i * pool_size + int(j) for i, j in enumerate(proxy[:, :n].argmax(1))])
        rows[f"best-of-{n} (reference)"] = {
            **text_metrics(task, chosen, completion_logprobs(reference, chosen)),
            "kl_to_reference": float(np.mean([best_of_n_kl(r, n) for r in proxy])),
            "kl_analytic_bound": kl_analytic_bound(n),
            "samples": chosen.completions,
        }
    return rows


def policy_row(task: TextTask, policy, reference, tokenizer, prompts: list[str], max_new_tokens: int) -> dict:
    """The policy's metrics on one sample per prompt, its KL the mean of sum_t log pi - log pi_ref."""
    samples = sample(policy, tokenizer, prompts, 1, max_new_tokens)
    ours, theirs = completion_logprobs(policy, samples), completion_logprobs(reference, samples)
    return {
        **text_metrics(task, samples, theirs),
        "samples": samples.completions,
        "kl_to_reference": float(np.mean([o.sum() - t.sum() for o, t in zip(ours, theirs)])),
    }


def run_settings(run_dir: Path) -> Settings:
    """The checked env settings of a text run's config.yaml."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir} has no config.yaml; give the folder of a text run")
    config = OmegaConf.load(config_path)
    env_cfg = config.get("env") if isinstance(config, DictConfig) else None
    if not isinstance(env_cfg, DictConfig):
        raise ConfigError(f"{run_dir}/config.yaml has no env group; give the folder of a text run")
    if env_cfg.get("kind") != "text":
        raise ConfigError(f"{run_dir} is a run on {env_cfg.get('id')}, not a text task")
    return check_settings(Settings, env_cfg, "env.")


def load_run_policy(run_dir: Path):
    """(task, policy LM, reference LM, tokenizer, env settings) of a text run folder: its config.yaml, and the
    trained policy as `checkpoint.pt` (a run of ours; taken first) or `policy/` (a save_pretrained folder)."""
    from envs.text.loading import load_causal_lm

    settings = run_settings(run_dir)
    task = load_task(settings.task, settings)
    policy_path = settings.policy_model or task.default_policy_model
    if policy_path is None:
        raise ConfigError(f"task {task.name!r} names no default model; set env.policy_model")
    reference, tokenizer = load_causal_lm(settings.reference_model or policy_path)
    return task, trained_policy(run_dir, policy_path, tokenizer).eval(), reference, tokenizer, settings


def trained_policy(run_dir: Path, initial_model: str, tokenizer):
    """The run's trained LM: `initial_model` with the checkpoint's `lm.` weights, or the `policy/` folder (whose
    tokenizer must have the reference's vocabulary)."""
    from envs.text.loading import load_causal_lm, require_same_vocabulary

    if (run_dir / "checkpoint.pt").is_file():
        policy, _ = load_causal_lm(initial_model)
        weights = load_checkpoint(run_dir / "checkpoint.pt")["agent"]
        policy.load_state_dict({name.removeprefix("lm."): w for name, w in weights.items() if name.startswith("lm.")})
        return policy
    if (run_dir / "policy").is_dir():
        policy, policy_tokenizer = load_causal_lm(run_dir / "policy")
        require_same_vocabulary(policy_tokenizer, tokenizer)
        return policy
    raise ConfigError(
        f"{run_dir} holds no trained policy: neither checkpoint.pt (a run of ours) nor policy/ (a causal LM folder "
        f"written by save_pretrained, as TRL's trainers and envs.text.pipeline.dpo leave); give a finished run's folder"
    )


def evaluation_prompts(task: TextTask, num_prompts: int, seed: int) -> list[str]:
    """`num_prompts` of the task's prompts, drawn with replacement by `seed`: the same for every policy."""
    return [task.prompts[i] for i in np.random.default_rng(seed).integers(len(task.prompts), size=num_prompts)]


def evaluate_run(run_dir: Path, num_prompts: int, best_of: list[int], seed: int, pool_size: int | None = None) -> str:
    prompts, rows = evaluate_rows(run_dir, num_prompts, best_of, seed, pool_size)
    return report(run_dir, num_prompts, seed, best_of, pool_size, prompts, rows)


def evaluate_rows(
    run_dir: Path, num_prompts: int, best_of: list[int], seed: int, pool_size: int | None = None
) -> tuple[list[str], dict]:
    """(prompts, {row name: metrics}) for the run's policy and each best-of-N."""
    task, policy, reference, tokenizer, settings = load_run_policy(run_dir)
    prompts = evaluation_prompts(task, num_prompts, seed)
    torch.manual_seed(seed)
    rows = {"policy (this run)": policy_row(task, policy, reference, tokenizer, prompts, settings.max_new_tokens)}
    rows |= best_of_n_rows(task, reference, tokenizer, prompts, best_of, settings.max_new_tokens, pool_size)
    return prompts, rows


COLUMNS = [
    "proxy_reward",
    "gold_reward",
    "gold_positive_fraction",
    "kl_to_reference",
    "kl_analytic_bound",
    "perplexity_under_reference",
    "distinct_1",
    "distinct_2",
]


def report(
    run_dir: Path,
    num_prompts: int,
    seed: int,
    best_of: list[int],
    pool_size: int | None,
    prompts: list[str],
    rows: dict,
) -> str:
    command = (
        f"python -m envs.text.evaluate {run_dir} --prompts {num_prompts} --best-of "
        f"{' '.join(map(str, best_of))} --seed {seed}" + (f" --pool {pool_size}" if pool_size else "")
    )
    lines = [
        f"# Text evaluation of {run_dir}",
        "",
        f"Command: `{command}`",
        "",
        "kl_to_reference: the policy's from its own samples; best-of-N's estimated from the reward ranks of "
        f"{pool_size or POOL_PER_N * max(best_of, default=1)} reference samples per prompt "
        "(envs/text/evaluate.py, best_of_n_kl); kl_analytic_bound: log N - (N - 1) / N, an upper bound on it.",
        "",
        "| policy | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    lines += [
        f"| {name} | " + " | ".join(f"{m[c]:.3f}" if c in m else "" for c in COLUMNS) + " |" for name, m in rows.items()
    ]
    lines += ["", "Samples of this run's policy:", ""]
    lines += [f"- {p!r} -> {c!r}" for p, c in zip(prompts[:10], rows["policy (this run)"]["samples"][:10])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--best-of", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument(
        "--pool", type=int, default=None, help=f"reference samples per prompt for best-of-N (default {POOL_PER_N} x N)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        text = evaluate_run(args.run_dir, args.prompts, args.best_of, args.seed, args.pool)
    except ConfigError as err:
        raise SystemExit(f"tokengym: error: {err}") from None
    (args.run_dir / "text_eval.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

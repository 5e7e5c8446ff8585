"""Evaluate a text policy saved by a run, beside best-of-N sampling from the reference model (the baseline any
RL result must beat at equal KL; Stiennon et al. 2020, Gao et al. 2022).

For each policy: proxy reward (the task's reward), gold reward and the fraction the gold scorer judges positive
(compound >= 0.05, VADER's convention), KL(policy || reference) per sequence, perplexity of the samples under the
reference, distinct-1/2, and sample texts. The policy's KL is estimated from its samples as
E[sum_t log pi(a_t|s_t) - log pi_ref(a_t|s_t)]; best-of-N's is the analytic log N - (N - 1) / N.

    python -m envs.text.evaluate results/runs/<run folder> --prompts 64 --best-of 1 4 16
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from core.checks import check_settings
from core.errors import ConfigError
from core.files import load_checkpoint
from envs.text.env import Settings
from envs.text.gold import POSITIVE_THRESHOLD
from envs.text.tasks import TextTask, load_task
from envs.text.tokens import left_padded


@dataclass
class Samples:
    prompts: list[str]
    completions: list[str]
    token_ids: list[list[int]]  # prompt + completion ids (with EOS if generated)
    prompt_lengths: list[int]


@torch.no_grad()
def sample(lm, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> Samples:
    """`n` completions per prompt, sampled at temperature 1 (no top-k/top-p), batched with left padding; each
    starts as an episode of the environment does (envs/text/tokens.py)."""
    encoded, ids, mask, pad = left_padded(tokenizer, prompts)
    width = ids.shape[1]
    out = lm.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )
    result = Samples([], [], [], [])
    for i, row in enumerate(out.tolist()):
        prompt_ids = encoded[i // n]
        generated = row[width:]
        if tokenizer.eos_token_id in generated:
            generated = generated[: generated.index(tokenizer.eos_token_id) + 1]
        result.prompts.append(prompts[i // n])
        result.completions.append(
            tokenizer.decode([t for t in generated if t != tokenizer.eos_token_id], skip_special_tokens=True)
        )
        result.token_ids.append(prompt_ids + generated)
        result.prompt_lengths.append(len(prompt_ids))
    return result


@torch.no_grad()
def completion_logprobs(lm, samples: Samples) -> list[np.ndarray]:
    """log p(completion token | prefix) under `lm`, teacher-forced, one array per sample."""
    width = max(map(len, samples.token_ids))
    ids = torch.tensor([t + [0] * (width - len(t)) for t in samples.token_ids])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in samples.token_ids])
    logp = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits.float(), -1)
    result = []
    for i, (tokens, start) in enumerate(zip(samples.token_ids, samples.prompt_lengths)):
        positions = torch.arange(start - 1, len(tokens) - 1)
        result.append(logp[i, positions, torch.tensor(tokens[start:])].numpy())
    return result


def distinct_n(texts: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_metrics(task: TextTask, samples: Samples, ref_logprobs: list[np.ndarray]) -> dict:
    proxy = np.asarray(task.score(samples.prompts, samples.completions), dtype=float)
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


def best_of_n(task: TextTask, reference, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> dict:
    samples = sample(reference, tokenizer, prompts, n, max_new_tokens)
    proxy = np.asarray(task.score(samples.prompts, samples.completions), dtype=float).reshape(len(prompts), n)
    best = [i * n + int(j) for i, j in enumerate(proxy.argmax(1))]
    chosen = Samples(
        *([getattr(samples, f)[i] for i in best] for f in ("prompts", "completions", "token_ids", "prompt_lengths"))
    )
    metrics = text_metrics(task, chosen, completion_logprobs(reference, chosen))
    return {**metrics, "kl_to_reference": math.log(n) - (n - 1) / n, "samples": chosen.completions}


def load_run_policy(run_dir: Path):
    """(task, policy LM, reference LM, tokenizer, env settings) of a run folder with a text checkpoint."""
    from envs.text.loading import load_causal_lm

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir} has no config.yaml; give the folder of a text run")
    env_cfg = OmegaConf.load(config_path).env
    if env_cfg.get("kind") != "text":
        raise ConfigError(f"{run_dir} is a run on {env_cfg.get('id')}, not a text task")
    settings = check_settings(Settings, env_cfg, "env.")
    task = load_task(settings.task, settings)
    policy_path = settings.policy_model or task.default_policy_model
    if policy_path is None:
        raise ConfigError(f"task {task.name!r} names no default model; set env.policy_model")
    reference, tokenizer = load_causal_lm(settings.reference_model or policy_path)
    policy, _ = load_causal_lm(policy_path)
    weights = load_checkpoint(run_dir / "checkpoint.pt")["agent"]
    policy.load_state_dict({name.removeprefix("lm."): w for name, w in weights.items() if name.startswith("lm.")})
    return task, policy.eval(), reference, tokenizer, settings


def evaluate_run(run_dir: Path, num_prompts: int, best_of: list[int], seed: int) -> str:
    prompts, rows = evaluate_rows(run_dir, num_prompts, best_of, seed)
    return report(run_dir, num_prompts, seed, best_of, prompts, rows)


def evaluate_rows(run_dir: Path, num_prompts: int, best_of: list[int], seed: int) -> tuple[list[str], dict]:
    """(prompts, {row name: metrics}) for the run's policy and each best-of-N."""
    task, policy, reference, tokenizer, settings = load_run_policy(run_dir)
    prompts = [task.prompts[i] for i in np.random.default_rng(seed).integers(len(task.prompts), size=num_prompts)]
    torch.manual_seed(seed)
    samples = sample(policy, tokenizer, prompts, 1, settings.max_new_tokens)
    ours, theirs = completion_logprobs(policy, samples), completion_logprobs(reference, samples)
    rows = {
        "policy (this run)": {
            **text_metrics(task, samples, theirs),
            "samples": samples.completions,
            "kl_to_reference": float(np.mean([o.sum() - t.sum() for o, t in zip(ours, theirs)])),
        }
    }
    for n in best_of:
        rows[f"best-of-{n} (reference)"] = best_of_n(task, reference, tokenizer, prompts, n, settings.max_new_tokens)
    return prompts, rows


def report(run_dir: Path, num_prompts: int, seed: int, best_of: list[int], prompts: list[str], rows: dict) -> str:
    columns = [
        "proxy_reward",
        "gold_reward",
        "gold_positive_fraction",
        "kl_to_reference",
        "perplexity_under_reference",
        "distinct_1",
        "distinct_2",
    ]
    command = (
        f"python -m envs.text.evaluate {run_dir} --prompts {num_prompts} --best-of "
        f"{' '.join(map(str, best_of))} --seed {seed}"
    )
    lines = [
        f"# Text evaluation of {run_dir}",
        "",
        f"Command: `{command}`",
        "",
        "| policy | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    lines += [
        f"| {name} | " + " | ".join(f"{m[c]:.3f}" if c in m else "" for c in columns) + " |" for name, m in rows.items()
    ]
    lines += ["", "Samples of this run's policy:", ""]
    lines += [f"- {p!r} -> {c!r}" for p, c in zip(prompts[:10], rows["policy (this run)"]["samples"][:10])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--best-of", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        text = evaluate_run(args.run_dir, args.prompts, args.best_of, args.seed)
    except ConfigError as err:
        raise SystemExit(f"tokengym: error: {err}") from None
    (args.run_dir / "text_eval.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

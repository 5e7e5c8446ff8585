"""The reward-vs-KL frontier of a text task (issue 20, part 5): every given run folder (our RL runs, TRL's, DPO's)
evaluated on the same prompts with envs/text/evaluate.py's functions, beside best-of-N sampling from the reference
with its KL both estimated (`best_of_n_kl`, from the reward ranks of reference samples) and bounded (the analytic
log N - (N - 1) / N, an upper bound; Beirami et al. 2024).

    python -m benchmarks.text_frontier --runs results/runs/frontier/* --dpo results/runs/dpo/* \\
        --prompts 512 --best-of 1 2 4 8 16 32 64 --out results/text_frontier

A run folder holds config.yaml (its env group names the task and the reference) and checkpoint.pt or policy/
(envs/text/evaluate.py, load_run_policy); summary.json, where present, names the method ("algo") and seed. Runs
of one method whose configs differ only in the seed (and in settings that do not change training: run_root,
torch_threads, a peer's output_dir, ...) are one setting: mean and 95% percentile-bootstrap CI over its seeds
(benchmarks/stats.py) where it has two or more. A folder that cannot be evaluated (no policy yet, another task or
reference) is listed in the report with the reason, and the rest go on.

Gold at equal proxy (Gao et al. 2022, "Scaling laws for reward model overoptimization", who argue that KL alone is
an inadequate yardstick): best-of-N's gold reward interpolated linearly in proxy reward between the two N around a
method's proxy reward (none outside best-of-N's range); likewise at equal (estimated) KL.

Writes <out>/README.md (the command, one table), frontier.csv (one row per run and per N) and frontier.png (gold
reward, gold positive fraction and proxy reward against KL). Every evaluation is also kept in <out>/cache/, keyed
by what it depends on (the prompts, the seed, the reference and, for a run, its policy file's size and time), so a
rerun with one more folder evaluates only that folder, and best-of-N's pool (the slow part: minutes per thousand
prompts x samples) can be drawn once, early, while runs still train.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks import ROOT, stats  # noqa: E402
from core.errors import ConfigError  # noqa: E402
from envs.text.evaluate import (  # noqa: E402
    POOL_PER_N,
    best_of_n_rows,
    evaluation_prompts,
    load_run_policy,
    policy_row,
)

METRICS = ["kl_to_reference", "gold_reward", "gold_positive_fraction", "proxy_reward"]
EXTRA = ["kl_analytic_bound", "perplexity_under_reference", "distinct_1", "distinct_2"]
NOT_A_SETTING = {
    "seed",
    "hydra",
    "run_root",
    "resume",
    "checkpoint_interval_s",
    "capture_video",
    "torch_threads",
    "kl_alarm",
    "eval_episodes",
}
RUN_SPECIFIC = {"seed", "output_dir", "logging_dir", "run_name"}  # at any depth, e.g. TRL's arguments under peer.config
SHOWN_SAMPLES = 3


@dataclass
class Point:
    """One evaluated run folder."""

    folder: Path
    method: str
    seed: int | None
    setting: dict  # its config flattened to dotted keys, less NOT_A_SETTING
    metrics: dict


@dataclass
class Group:
    """The runs of one method and setting."""

    method: str
    label: str
    points: list[Point]

    def values(self, metric: str) -> np.ndarray:
        return np.array([p.metrics.get(metric, math.nan) for p in self.points], dtype=float)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values(metric)))

    def ci(self, metric: str) -> tuple[float, float] | None:
        values = self.values(metric)
        if len(values) < 2 or np.isnan(values).any():
            return None
        return stats.stratified_bootstrap_ci([values], stats.mean)


@dataclass
class Frontier:
    prompts: list[str]
    max_new_tokens: int
    pool_size: int
    best_of: dict[int, dict]  # N -> metrics
    points: list[Point]
    skipped: dict[str, str] = field(default_factory=dict)  # folder -> reason
    wall_s: float = 0.0


def flatten(config: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe(folder: Path, default_method: str) -> tuple[str, int | None, dict]:
    """(method, seed, setting) of a run folder, from summary.json where it has them, else config.yaml."""
    config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    assert isinstance(config, dict)  # load_run_policy has read its env group
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    algo = config.get("algo")
    method = summary.get("algo") or (algo.get("name") if isinstance(algo, dict) else algo) or default_method
    seed = summary.get("seed", config.get("seed"))
    return str(method), seed, setting_of(config)


def setting_of(config: dict) -> dict:
    """A run's config flattened to dotted keys, less what differs between seeds of one setting, and less null
    values (a setting added later with a null default is the same setting as its absence in an older run)."""
    return {
        k: v
        for k, v in flatten(config).items()
        if k.split(".")[0] not in NOT_A_SETTING and k.split(".")[-1] not in RUN_SPECIFIC and v is not None
    }


def reference_of(settings, task) -> str:
    name = settings.reference_model or settings.policy_model or task.default_policy_model
    local = Path(str(name)).expanduser()
    return str(local.resolve()) if local.exists() else str(name)


def cached(cache_dir: Path | None, key: dict, compute):
    """compute()'s JSON-able result, kept in cache_dir under a hash of `key` and read back while the key holds."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())["value"]
    value = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    unfinished = path.with_suffix(".partial")
    unfinished.write_text(json.dumps({"key": key, "value": value}, default=float))
    unfinished.replace(path)
    return value


def policy_stamp(folder: Path) -> list:
    """Size and modification time of the files the run's policy is loaded from (envs/text/evaluate.py,
    trained_policy: checkpoint.pt first, else policy/)."""
    checkpoint = folder / "checkpoint.pt"
    files = [checkpoint] if checkpoint.is_file() else sorted((folder / "policy").glob("*"))
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def evaluate(
    folders: list[tuple[Path, str]],
    num_prompts: int,
    best_of: list[int],
    pool_size: int | None,
    seed: int,
    cache_dir: Path | None = None,
) -> Frontier:
    """Each folder's policy on the same prompts (the first loadable folder's task, reference and prompts), one
    sample per prompt after torch.manual_seed(seed); then best-of-N from that reference. With cache_dir, each
    result is read from there where an earlier call computed it (`cached`)."""
    start = time.perf_counter()
    anchor: tuple | None = None
    prompts: list[str] = []
    points, skipped = [], {}
    for folder, default_method in folders:
        try:
            task, policy, reference, tokenizer, settings = load_run_policy(folder)
            method, run_seed, setting = describe(folder, default_method)
        except ConfigError as err:
            skipped[str(folder)] = str(err)
            continue
        if anchor is None:
            anchor = (task, reference, tokenizer, settings, reference_of(settings, task))
            prompts = evaluation_prompts(task, num_prompts, seed)
        elif (settings.task, reference_of(settings, task)) != (anchor[3].task, anchor[4]):
            skipped[str(folder)] = (
                f"task {settings.task!r} with reference {reference_of(settings, task)}, not the first run's "
                f"{anchor[3].task!r} with {anchor[4]}"
            )
            continue
        key = {"reference": anchor[4], "task": settings.task, "prompts": prompts, "seed": seed}
        key |= {"max_new_tokens": settings.max_new_tokens, "run": str(folder.resolve())}
        key |= {"policy": policy_stamp(folder)}
        metrics = cached(cache_dir, key, partial(sampled_policy_row, anchor, policy, prompts, settings, seed))
        points.append(Point(folder, method, run_seed, setting, metrics))
    if anchor is None:
        raise ConfigError("no folder could be evaluated: " + "; ".join(f"{f}: {r}" for f, r in skipped.items()))
    task, reference, tokenizer, settings, _ = anchor
    pool_size = pool_size or POOL_PER_N * max(best_of)
    key = {"reference": anchor[4], "task": settings.task, "prompts": prompts, "seed": seed, "best_of": best_of}
    key |= {"pool": pool_size, "max_new_tokens": settings.max_new_tokens}

    def draw_best_of_n() -> dict:
        torch.manual_seed(seed)
        return best_of_n_rows(task, reference, tokenizer, prompts, best_of, settings.max_new_tokens, pool_size)

    rows = cached(cache_dir, key, draw_best_of_n)
    best = {n: rows[f"best-of-{n} (reference)"] for n in best_of}
    return Frontier(prompts, settings.max_new_tokens, pool_size, best, points, skipped, time.perf_counter() - start)


def sampled_policy_row(anchor: tuple, policy, prompts: list[str], settings, seed: int) -> dict:
    torch.manual_seed(seed)
    return policy_row(anchor[0], policy, anchor[1], anchor[2], prompts, settings.max_new_tokens)


def group_points(points: list[Point]) -> list[Group]:
    """Runs of one method with the same setting form a group, labelled by the settings in which the method's
    groups differ (just the method where it has one group)."""
    keyed: dict[tuple[str, str], list[Point]] = {}
    for point in points:
        keyed.setdefault((point.method, json.dumps(point.setting, sort_keys=True, default=str)), []).append(point)
    groups = []
    for (method, _), members in keyed.items():
        siblings = [m[0].setting for (other, _), m in keyed.items() if other == method]
        keys = sorted(set().union(*siblings))
        differing = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in siblings}) > 1]
        label = ", ".join(f"{k}={members[0].setting.get(k, 'unset')}" for k in differing)
        groups.append(Group(method, label, members))
    return groups


def best_of_n_at(x: float, xs: list[float], ys: list[float]) -> float | None:
    """Best-of-N's y at x by linear interpolation between its points sorted by x; None outside their range."""
    pairs = sorted((a, b) for a, b in zip(xs, ys) if not (math.isnan(a) or math.isnan(b)))
    if math.isnan(x) or not pairs or not pairs[0][0] <= x <= pairs[-1][0]:
        return None
    return float(np.interp(x, [a for a, _ in pairs], [b for _, b in pairs]))


def cell(group: Group, metric: str) -> str:
    mean = group.mean(metric)
    if math.isnan(mean):
        return "n/a"
    interval = group.ci(metric)
    return f"{mean:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def equal_cell(value: float | None, own: float) -> str:
    if value is None:
        return "n/a (outside best-of-N's range)" if not math.isnan(own) else "n/a"
    return f"{value:.3f} ({own - value:+.3f})"


def table(frontier: Frontier, groups: list[Group]) -> list[str]:
    best = frontier.best_of
    curve = {m: [best[n].get(m, math.nan) for n in best] for m in METRICS}
    lines = [
        "| method | setting | runs (seed) | KL estimate, nats | KL analytic bound | gold reward | gold positive "
        "fraction | proxy reward | best-of-N gold at equal proxy (difference) | best-of-N gold at equal KL "
        "(difference) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, m in best.items():
        values = " | ".join(f"{m[k]:.3f}" if k in m else "n/a" for k in ("gold_reward", "gold_positive_fraction"))
        lines.append(
            f"| best-of-N | N={n} | reference | {m['kl_to_reference']:.3f} | {m['kl_analytic_bound']:.3f} | "
            f"{values} | {m['proxy_reward']:.3f} | | |"
        )
    for g in groups:
        runs = ", ".join(f"{p.folder.name} ({p.seed})" for p in g.points)
        gold = g.mean("gold_reward")
        at_proxy = best_of_n_at(g.mean("proxy_reward"), curve["proxy_reward"], curve["gold_reward"])
        at_kl = best_of_n_at(g.mean("kl_to_reference"), curve["kl_to_reference"], curve["gold_reward"])
        lines.append(
            f"| {g.method} | {g.label} | {runs} | {cell(g, 'kl_to_reference')} | | {cell(g, 'gold_reward')} | "
            f"{cell(g, 'gold_positive_fraction')} | {cell(g, 'proxy_reward')} | {equal_cell(at_proxy, gold)} | "
            f"{equal_cell(at_kl, gold)} |"
        )
    return lines


def plot(frontier: Frontier, groups: list[Group], path: Path) -> None:
    """Three panels against KL: best-of-N as a line at its estimated KL and, dashed, at the analytic bound; each
    group's seeds as faint dots and their mean (with its CI) as a labelled marker."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    best = frontier.best_of
    widest = max([m["kl_analytic_bound"] for m in best.values()] + [g.mean("kl_to_reference") for g in groups])
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes, ("gold_reward", "gold_positive_fraction", "proxy_reward")):
        ys = [m.get(metric, math.nan) for m in best.values()]
        ax.plot([m["kl_to_reference"] for m in best.values()], ys, "k-o", ms=4, label="best-of-N, estimated KL")
        ax.plot(
            [m["kl_analytic_bound"] for m in best.values()],
            ys,
            "--^",
            color="tab:red",
            ms=4,
            alpha=0.6,
            zorder=3,
            label="best-of-N, KL bound",
        )
        for n, m in best.items():
            ax.annotate(f"{n}", (m["kl_to_reference"], m.get(metric, math.nan)), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")  # fmt: skip
        for i, g in enumerate(groups):
            colour = colours(i % 10)
            ax.plot(g.values("kl_to_reference"), g.values(metric), ".", color=colour, alpha=0.35)
            kl_ci, y_ci = g.ci("kl_to_reference"), g.ci(metric)
            x, y = g.mean("kl_to_reference"), g.mean(metric)
            ax.errorbar(
                x,
                y,
                xerr=None if kl_ci is None else [[x - kl_ci[0]], [kl_ci[1] - x]],
                yerr=None if y_ci is None else [[y - y_ci[0]], [y_ci[1] - y]],
                fmt="o",
                color=colour,
                label=f"{g.method} {g.label}".strip(),
            )
            ax.annotate(
                f"{g.method} {g.label}".strip(),
                (x, y),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color=colour,
            )
        if all(math.isnan(v) for v in ys):
            ax.text(0.5, 0.5, "no gold scorer in this task", transform=ax.transAxes, ha="center")
        ax.set(xlabel="KL(policy || reference) per sequence, nats", ylabel=metric.replace("_", " "))
        ax.set_xscale("symlog" if widest > 4 else "linear")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{len(frontier.prompts)} prompts, one sample each; best-of-N from {frontier.pool_size} reference "
                 f"samples per prompt")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(frontier: Frontier, groups: list[Group], path: Path) -> None:
    fields = ["method", "setting", "run", "seed", "N", *METRICS, *EXTRA]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for n, m in frontier.best_of.items():
            writer.writerow({"method": "best-of-N", "setting": f"N={n}", "run": "reference", "N": n, **m})
        for g in groups:
            for p in g.points:
                writer.writerow(
                    {"method": g.method, "setting": g.label, "run": str(p.folder), "seed": p.seed, **p.metrics}
                )


def report(frontier: Frontier, groups: list[Group], command: str) -> str:
    lines = [
        "# Reward against KL: every method on the same prompts, beside best-of-N",
        "",
        "```bash",
        command,
        "```",
        "",
        f"{len(frontier.prompts)} prompts of the task (drawn with replacement), one sample per prompt and policy "
        f"(temperature 1, at most {frontier.max_new_tokens} new tokens); {frontier.wall_s:.0f} s in all. A policy's "
        "KL is the mean over its samples of sum_t log pi(a_t|s_t) - log pi_ref(a_t|s_t). Best-of-N: for each N, "
        f"the highest proxy reward among the first N of {frontier.pool_size} reference samples per prompt; its KL "
        "estimate is the exact best-of-N KL of those samples' empirical reward distribution (envs/text/evaluate.py, "
        "best_of_n_kl: repeated completions share their mass, ties share a level), which never exceeds the "
        "analytic bound log N - (N - 1) / N and equals it when no completion repeats. Values of a method with two or "
        "more seeds: mean [95% percentile-bootstrap CI over seeds]. Gold at equal proxy (Gao et al. 2022) and at "
        "equal KL: best-of-N's gold interpolated linearly at the method's mean proxy reward or KL, with the method's "
        "gold minus it in brackets.",
        "",
        *table(frontier, groups),
        "",
        "![gold reward, gold positive fraction and proxy reward against KL](frontier.png)",
        "",
        "Raw values, one row per run and per N: `frontier.csv`.",
    ]
    if frontier.skipped:
        lines += ["", "Folders not evaluated:", ""] + [f"- `{f}`: {reason}" for f, reason in frontier.skipped.items()]
    lines += ["", f"Samples (the first {SHOWN_SAMPLES} prompts, each group's first run):", ""]
    for g in groups:
        shown = zip(frontier.prompts, g.points[0].metrics["samples"])
        lines += [f"- {g.method} {g.label}".rstrip() + ": " + "; ".join(f"{p!r} -> {c!r}" for p, c in list(shown)[:3])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="run folders (ours, TRL's)")
    parser.add_argument("--dpo", type=Path, nargs="*", default=[], help="DPO run folders (envs.text.pipeline.dpo)")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--best-of", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument(
        "--pool", type=int, default=None, help=f"reference samples per prompt (default {POOL_PER_N} x N)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "text_frontier")
    parser.add_argument("--no-cache", action="store_true", help="evaluate all afresh; keep nothing in <out>/cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folders = [(f, "run") for f in args.runs] + [(f, "dpo") for f in args.dpo]
    try:
        if not folders:
            raise ConfigError("give at least one run folder with --runs or --dpo")
        cache_dir = None if args.no_cache else args.out / "cache"
        frontier = evaluate(folders, args.prompts, sorted(set(args.best_of)), args.pool, args.seed, cache_dir)
    except ConfigError as err:
        print(f"tokengym: error: {err}", file=sys.stderr)
        sys.exit(2)
    groups = group_points(frontier.points)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(frontier, groups, args.out / "frontier.csv")
    plot(frontier, groups, args.out / "frontier.png")
    command = "python -m benchmarks.text_frontier " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report(frontier, groups, command)
    (args.out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

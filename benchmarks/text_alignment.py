"""Alignment on the default sentiment task (issue 3's quality bar), one run per seed, each evaluated beside
best-of-N sampling from the reference model, and the training curves of proxy and gold reward against KL.

    python -m benchmarks.text_alignment --seeds 1 2 3                           # the shipped preset
    python -m benchmarks.text_alignment --seeds 1 --name text_overoptimisation -- env.kl_target=null env.kl_coef=0.01
    python -m benchmarks.text_alignment --algo a2c --seeds 1 --best-of 1 16 -- total_timesteps=51200

Hydra overrides for every run go last, after `--`.

Writes results/<name>/README.md (command, per-seed table, mean and spread, the bar's checks), curves.csv
and curves.png (proxy and gold reward against the per-sequence KL logged during training).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from benchmarks import ROOT, train_in_subprocess  # noqa: E402
from envs.text.evaluate import evaluate_rows  # noqa: E402

COLUMNS = [
    "proxy_reward",
    "gold_reward",
    "gold_positive_fraction",
    "kl_to_reference",
    "perplexity_under_reference",
    "distinct_1",
    "distinct_2",
]
CURVE_TAGS = ["text/kl", "text/proxy_reward", "text/gold_reward"]


def train(algo: str, seed: int, overrides: list[str], run_root: Path) -> tuple[Path, float]:
    run_dir = run_root / f"{algo}-seed{seed}"
    return run_dir, train_in_subprocess(run_dir, [f"algo={algo}", "env=text_sentiment", f"seed={seed}", *overrides])


def training_curve(run_dir: Path) -> list[dict]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    series = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in CURVE_TAGS}
    steps = sorted(set.intersection(*(set(s) for s in series.values())))
    return [{"step": step, **{tag.split("/")[1]: series[tag][step] for tag in CURVE_TAGS}} for step in steps]


def plot_curves(curves: dict[int, list[dict]], best_of: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    widest = max((r["kl"] for rows in curves.values() for r in rows), default=0.0)
    scale = "symlog" if widest > 4 else "linear"  # a log axis only where KL spans more than a few nats
    for ax, key in zip(axes, ("proxy_reward", "gold_reward")):
        for seed, rows in curves.items():
            ax.plot([r["kl"] for r in rows], [r[key] for r in rows], ".", ms=3, alpha=0.5, label=f"PPO seed {seed}")
        if best_of:
            ax.plot(
                [m["kl_to_reference"] for m in best_of.values()],
                [m[key] for m in best_of.values()],
                "k^-",
                label="best-of-N (" + ", ".join(name.split()[0][8:] for name in best_of) + ")",
            )
        ax.set(xlabel="KL(policy || reference) per sequence, nats", ylabel=key.replace("_", " "), xscale=scale)
        ax.legend(fontsize=7)
    fig.suptitle("Proxy (learned reward model) and gold (VADER) reward against KL, during training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarise(rows: dict[int, dict], best_of: dict, walls: dict[int, float]) -> list[str]:
    lines = ["| run | " + " | ".join(COLUMNS) + " | training wall-clock s |", "|---|" + "---|" * (len(COLUMNS) + 1)]
    for seed, m in rows.items():
        lines.append(f"| seed {seed} | " + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + f" | {walls[seed]:.0f} |")
    if len(rows) > 1:
        stats = [
            (statistics.mean(m[c] for m in rows.values()), statistics.stdev(m[c] for m in rows.values()))
            for c in COLUMNS
        ]
        lines.append(
            "| mean +- sd | "
            + " | ".join(f"{a:.3f} +- {b:.3f}" for a, b in stats)
            + f" | {statistics.mean(walls.values()):.0f} |"
        )
    for name, m in best_of.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + " | |")
    return lines


def bar_checks(rows: dict[int, dict], best_of: dict, walls: dict[int, float]) -> list[str]:
    base, bo16 = best_of.get("best-of-1 (reference)"), best_of.get("best-of-16 (reference)")
    lines = []
    for seed, m in rows.items():
        checks = [
            f"gold positive {m['gold_positive_fraction']:.3f} (>= 0.90: {m['gold_positive_fraction'] >= 0.9})",
            f"KL {m['kl_to_reference']:.2f} nats (<= 10: {m['kl_to_reference'] <= 10})",
            f"wall-clock {walls[seed] / 60:.1f} min (< 30: {walls[seed] < 1800})",
        ]
        if base:
            ratio = m["perplexity_under_reference"] / base["perplexity_under_reference"]
            checks.append(f"perplexity {ratio:.2f}x the base model's samples (<= 2: {ratio <= 2})")
        if bo16:
            kl, bo16_kl = m["kl_to_reference"], bo16["kl_to_reference"]
            checks.append(
                f"gold {m['gold_reward']:.3f} vs best-of-16 {bo16['gold_reward']:.3f} "
                f"(beats it: {m['gold_reward'] > bo16['gold_reward']}) at KL {kl:.2f} vs "
                f"{bo16_kl:.2f} (no more KL: {kl <= bo16_kl})"
            )
        lines.append(f"- seed {seed}: " + "; ".join(checks))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo_clip")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--prompts", type=int, default=256, help="evaluation prompts per run")
    parser.add_argument("--best-of", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--name", default=None, help="results/<name> (default: text_alignment_<algo>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    name = args.name or f"text_alignment_{args.algo}"
    out, run_root = ROOT / "results" / name, ROOT / "results" / "runs" / name
    out.mkdir(parents=True, exist_ok=True)

    rows, walls, curves = {}, {}, {}
    best_of: dict = {}  # {row name: metrics} of the best-of-N rows, from the first run
    for seed in args.seeds:
        run_dir, walls[seed] = train(args.algo, seed, args.overrides, run_root)
        _, evaluated = evaluate_rows(run_dir, args.prompts, args.best_of if not best_of else [], seed=0)
        rows[seed] = evaluated.pop("policy (this run)")
        best_of = best_of or evaluated  # the same prompts and seed for every run: computed once
        curves[seed] = training_curve(run_dir)

    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["seed", "step", "kl", "proxy_reward", "gold_reward"])
        writer.writeheader()
        writer.writerows({"seed": seed, **r} for seed, rs in curves.items() for r in rs)
    plot_curves(curves, best_of, out / "curves.png")
    command = "python -m benchmarks.text_alignment " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    samples = [f"- {s!r}" for s in rows[args.seeds[0]]["samples"][:10]]
    text = [
        f"# {args.algo} on the default sentiment task",
        "",
        f"Command: `{command}`",
        "",
        f"Evaluation: {args.prompts} prompts from the task, one sample each (seed 0), scored by the proxy reward "
        f"model and the gold scorer (VADER); KL from the policy's own samples; best-of-N from the reference "
        f"model on the same prompts (KL estimated from the reward ranks of a pool of reference samples per "
        f"prompt, beside the analytic bound log N - (N-1)/N; envs/text/evaluate.py).",
        "",
        *summarise(rows, best_of, walls),
        "",
        "Checks against the quality bar:",
        "",
        *bar_checks(rows, best_of, walls),
        "",
        "![proxy and gold reward against KL](curves.png)",
        "",
        f"Samples (seed {args.seeds[0]}), completions of the prompts:",
        "",
        *samples,
        "",
    ]
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()

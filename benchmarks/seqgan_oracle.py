"""The SeqGAN paper's synthetic-oracle experiment (Table 1): per seed, one pre-training run (MLE, then the
discriminator), and from that same pre-trained state one adversarial run per variant (algo.init_from), so the
variants are compared paired. Runs whose summary.json exists are kept, so a stopped benchmark continues.

    python -m benchmarks.seqgan_oracle --seeds 1 2 3 -- algo.dis_epochs=1 algo.num_negatives=2500 \
        algo.dis_rounds=1 algo.adversarial_epochs=80

Everything after `--` applies to every run. Writes results/seqgan_oracle/README.md (NLL-oracle after MLE and
after adversarial training per variant and seed, mean and spread, diversity, wall-clock) and nll_oracle.png
(the curves beside the authors' log, ../shared/data/seqgan-oracle/experiment-log.txt).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import ROOT, train_in_subprocess  # noqa: E402

AUTHORS_LOG = ROOT.parent / "shared" / "data" / "seqgan-oracle" / "experiment-log.txt"
VARIANTS = {"seqgan": ["algo.generator_update=pg", "algo.baseline=false"],  # the paper's update
            "pg_baseline": ["algo.generator_update=pg", "algo.baseline=true"],
            "ppo": ["algo.generator_update=ppo", "algo.baseline=false"],  # PPO-clip on the paper's rewards
            "ppo_baseline": ["algo.generator_update=ppo", "algo.baseline=true"]}
PAPER = {"random": 10.310, "MLE": 9.038, "SS": 8.985, "PG-BLEU": 8.946, "SeqGAN": 8.736}


def run(folder: Path, seed: int, overrides: list[str]) -> dict:
    if not (folder / "summary.json").exists():
        train_in_subprocess(folder, ["algo=seqgan", "env=seqgan_oracle", f"seed={seed}", *overrides])
    return json.loads((folder / "summary.json").read_text())


def authors_curve() -> tuple[list[int], list[float]]:
    """(epoch on the MLE + adversarial axis, NLL-oracle) from the authors' log (epochs restart at 0)."""
    epochs, values, offset = [], [], 0
    for line in AUTHORS_LOG.read_text().splitlines():
        if line.startswith("adversarial"):
            offset = epochs[-1] + 5
        elif line.startswith("epoch"):
            _, epoch, _, nll = line.split()
            epochs.append(offset + int(epoch))
            values.append(float(nll))
    return epochs, values


def generator_epochs(history: list[dict], pretrain_epochs: int, pretrain_units: int) -> list[tuple[int, float]]:
    """(generator epoch, NLL-oracle): MLE epochs as they are, adversarial epoch k at pretrain_epochs + k."""
    return [(h["step"] if h["step"] <= pretrain_epochs else h["step"] - pretrain_units + pretrain_epochs,
             h["nll_oracle"]) for h in history]


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=["seqgan", "pg_baseline"], choices=list(VARIANTS))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    out, runs = ROOT / "results" / "seqgan_oracle", ROOT / "results" / "runs" / "seqgan_oracle"
    out.mkdir(parents=True, exist_ok=True)

    results: dict[int, dict[str, dict]] = {}
    for seed in args.seeds:
        pre_dir = runs / f"seed{seed}" / "pretrain"
        results[seed] = {"pretrain": run(pre_dir, seed, [*args.overrides, "algo.adversarial_epochs=0"])}
        for variant in args.variants:
            results[seed][variant] = run(runs / f"seed{seed}" / variant, seed,
                                         [*args.overrides, *VARIANTS[variant], f"algo.init_from={pre_dir}"])
    write_report(results, args, out)


def write_report(results: dict[int, dict[str, dict]], args, out: Path) -> None:
    names = ["pretrain", *args.variants]
    rows = ["| seed | NLL-oracle after MLE | " + " | ".join(f"NLL-oracle, {v}" for v in args.variants)
            + " | self-BLEU-4 (" + " / ".join(names) + ") | wall-clock s (" + " / ".join(names) + ") |",
            "|---|---|" + "---|" * len(args.variants) + "---|---|"]
    for seed, runs in results.items():
        # a variant (init_from) counts its adversarial training only; pre-training is the first column
        walls = [runs[n]["wall_clock_s"] for n in names]
        rows.append(f"| {seed} | " + " | ".join(f"{runs[n]['final']['nll_oracle']:.3f}" for n in names)
                    + " | " + " / ".join(f"{runs[n]['final']['self_bleu4']:.3f}" for n in names)
                    + " | " + " / ".join(f"{w:.0f}" for w in walls) + " |")
    if len(results) > 1:
        rows.append("| mean +- sd | " + " | ".join(mean_sd([r[n]["final"]["nll_oracle"] for r in results.values()])
                                                 for n in names) + " | | |")
    runs_root = ROOT / "results" / "runs" / "seqgan_oracle"
    algo = OmegaConf.load(runs_root / f"seed{args.seeds[0]}" / "pretrain" / "config.yaml").algo
    pretrain_units = algo.pretrain_epochs + algo.dis_pretrain_rounds

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(*authors_curve(), "k--", label="authors' log (SeqGAN repository)")
    for seed, runs in results.items():
        for name in args.variants:
            points = generator_epochs(runs[name]["history"], algo.pretrain_epochs, pretrain_units)
            ax.plot(*zip(*points), label=f"{name}, seed {seed}", alpha=0.8)
    ax.axhline(PAPER["SeqGAN"], color="grey", lw=0.8)
    ax.set(xlabel="generator epoch (MLE, then adversarial)", ylabel="NLL-oracle (nats per token)", ylim=(8.4, 10.5))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "nll_oracle.png", dpi=120)

    command = "python -m benchmarks.seqgan_oracle " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = ["# SeqGAN synthetic-oracle experiment (Yu et al. 2017, Table 1)", "", f"Command: `{command}`", "",
            "Paper, Table 1 (NLL-oracle): " + ", ".join(f"{k} {v}" for k, v in PAPER.items()) + ".", "",
            *rows, "", "![NLL-oracle curves](nll_oracle.png)", ""]
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()

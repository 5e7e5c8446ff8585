"""Build the default base LM and reward model, measure them, and write results/text_models.md.

    python -m envs.text.pipeline.build                                   # the defaults, into ~/.cache/tokengym
    python -m envs.text.pipeline.build text_files=[my.txt] labeller=gold # your own text, ranked by the gold scorer
    python -m envs.text.pipeline.build --cache-dir /tmp/tg --report /tmp/report.md lm_epochs=1

Reported: build time, held-out perplexity, the reward model's held-out pairwise accuracy (and the gold
scorer's on the same pairs), sentiment AUC on SST-2 test and IMDB (UCI) where ../shared/data has them, and
the base LM's samples with their proxy and gold scores.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.errors import ConfigError
from envs.text.gold import POSITIVE_THRESHOLD, gold_scores
from envs.text.loading import load_causal_lm, load_reward_model
from envs.text.pipeline.base_lm import sample_continuations
from envs.text.pipeline.cache import build_text_models, heldout_ranked_groups, split_corpus
from envs.text.pipeline.reward_model import pairwise_accuracy, reward_scores, split_prompt
from envs.text.pipeline.settings import RT_POLARITY, TextModelSettings, settings_from_overrides

REPORT = Path(__file__).resolve().parents[3] / "results" / "text_models.md"
SHARED_DATA = RT_POLARITY.parent
N_SAMPLE_PROMPTS, SHOWN_SAMPLES, MAX_NEW_TOKENS = 256, 10, 40


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive sentence > score of a negative one), ties one half (the ROC AUC)."""
    margins = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    return float(((margins > 0) + 0.5 * (margins == 0)).mean())


def labelled_heldout_sets() -> dict[str, tuple[list[str], np.ndarray]]:
    """SST-2 test ('<label> <sentence>') and IMDB UCI ('<sentence>\\t<label>'), where present."""
    sets = {}
    sst, imdb = SHARED_DATA / "sst2" / "stsa.binary.test", SHARED_DATA / "imdb-sentences-uci" / "imdb_labelled.txt"
    if sst.is_file():
        rows = [line.split(" ", 1) for line in sst.read_text(encoding="utf-8").split("\n") if line.strip()]
        sets["SST-2 test (overlaps MR, see note)"] = (
            [text for _, text in rows],
            np.array([int(label) for label, _ in rows]),
        )
    if imdb.is_file():
        rows = [line.rsplit("\t", 1) for line in imdb.read_text(encoding="utf-8").split("\n") if line.strip()]
        sets["IMDB sentences (UCI), out of domain"] = (
            [text.strip() for text, _ in rows],
            np.array([int(label) for _, label in rows]),
        )
    return sets


@torch.no_grad()
def proxy_scores(model, tokenizer, texts: list[str], batch_size: int = 128) -> np.ndarray:
    return torch.cat(
        [reward_scores(model, tokenizer, texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    ).numpy()


def measure(settings: TextModelSettings, paths) -> dict:
    """Everything the report shows beyond the build's own metrics."""
    lm, lm_tokenizer = load_causal_lm(paths.base_lm)
    rm, rm_tokenizer = load_reward_model(paths.reward_model)
    _, held_out = split_corpus(settings)
    groups = heldout_ranked_groups(settings, held_out)
    gold = torch.tensor([gold_scores(group.texts()).tolist() for group in groups])
    labeller = torch.tensor([group.scores for group in groups])
    usable = [s.text for s in held_out if len(s.text.split()) >= settings.prompt_words + 2][:N_SAMPLE_PROMPTS]
    prompts, real_endings = zip(*(split_prompt(text, settings.prompt_words) for text in usable))
    start = time.perf_counter()
    samples = sample_continuations(lm, lm_tokenizer, list(prompts), MAX_NEW_TOKENS, seed=settings.seed)
    sampling_s = time.perf_counter() - start
    sample_texts = [p + c for p, c in zip(prompts, samples)]
    real_texts = [p + e for p, e in zip(prompts, real_endings)]
    return {
        "gold_heldout_pairwise_accuracy": pairwise_accuracy(gold, labeller),
        "sets": {
            name: (
                pairwise_auc(proxy_scores(rm, rm_tokenizer, texts), labels),
                pairwise_auc(gold_scores(texts), labels),
                len(texts),
            )
            for name, (texts, labels) in labelled_heldout_sets().items()
        },
        "sampling_s": sampling_s,
        "prompts": prompts,
        "samples": samples,
        "sample_proxy": proxy_scores(rm, rm_tokenizer, sample_texts),
        "sample_gold": gold_scores(sample_texts),
        "real_proxy": proxy_scores(rm, rm_tokenizer, real_texts),
        "real_gold": gold_scores(real_texts),
    }


def table_cell(text: str) -> str:
    return text.replace("|", "&#124;").replace("\n", "\\n")


def report(command: str, settings: TextModelSettings, paths, build_s: tuple, load: tuple, m: dict) -> str:
    b = paths.metrics
    lines = [
        "# Default text models: base LM (stage 1) and reward model (stage 2)",
        "",
        "Made by",
        "",
        "```bash",
        command,
        "```",
        "",
        f"on {os.cpu_count()} CPU cores, torch {torch.__version__}, {settings.torch_threads} torch threads; load "
        f"average (1 min) {load[0]:.2f} at the start and {load[1]:.2f} at the end (other jobs shared the machine "
        f"when it was above about 2). Times are wall-clock, with the process's CPU time (all threads summed) "
        f"in brackets, which depends less on other jobs. Cache folder: `{paths.folder}`.",
        "",
        "## Build",
        "",
        "| what | value |",
        "|---|---|",
        f"| whole build (tokenizer, LM, reward model, their evaluations, saving) | {build_s[0]:.0f} s "
        f"({build_s[1]:.0f} s CPU) |",
        f"| tokenizer (byte-level BPE) | {b['tokenizer_s']} s, vocabulary {b['vocab_size']} |",
        f"| base LM | GPT-2, {settings.n_layer} layers, d_model {settings.n_embd}, {settings.n_head} heads, "
        f"context {settings.context_length}; {b['lm_parameters']:,} parameters |",
        f"| LM pre-training | {settings.lm_epochs} epochs over {b['sentences_held_in']} held-in sentences "
        f"({b['lm_train_tokens_per_epoch']:,} tokens per epoch), batches of {settings.lm_batch_size} sentences, "
        f"rate {settings.lm_learning_rate}: {b['lm_train_s']} s ({b['lm_train_cpu_s']} s CPU) |",
        f"| **LM held-out perplexity** (per BPE token, {b['sentences_held_out']} held-out sentences) | "
        f"**{b['lm_heldout_perplexity']}** |",
        f"| reward-model training | {b['rm_train_groups']} prompts x K={settings.responses_per_prompt} ranked "
        f"responses (labeller: {settings.labeller}), {settings.rm_epochs} epoch(s): {b['rm_train_s']} s "
        f"({b['rm_train_cpu_s']} s CPU) |",
        f"| **reward model held-out pairwise accuracy** ({b['rm_heldout_groups']} held-out prompts) | "
        f"**{b['rm_heldout_pairwise_accuracy']:.3f}** (held-in {b['rm_heldin_pairwise_accuracy']:.3f}) |",
        f"| gold scorer (VADER) on the same held-out pairs, ties one half | "
        f"{m['gold_heldout_pairwise_accuracy']:.3f} |",
        "",
        "Sentiment of whole labelled sentences never trained on, as ROC AUC (the pairwise accuracy over all "
        "(positive, negative) sentence pairs):",
        "",
        "| set | sentences | proxy reward model | gold (VADER) |",
        "|---|---|---|---|",
        *[f"| {name} | {n} | {proxy:.3f} | {gold:.3f} |" for name, (proxy, gold, n) in m["sets"].items()],
        "",
        "SST-2 was built from the same Rotten Tomatoes snippets as rt-polarity (MR): 1,496 of its 1,821 test "
        "sentences appear verbatim as MR lines (../shared/data/README.md), and the base LM and reward model "
        "trained on the MR held-in split, so its figure is not a clean held-out score; the IMDB set is.",
        "",
        "## The base LM's samples",
        "",
        f"{len(m['samples'])} prompts (the first {settings.prompt_words} words of held-out sentences), one "
        f"ancestral sample each (temperature 1, no top-k/top-p, at most {MAX_NEW_TOKENS} tokens), "
        f"{m['sampling_s']:.1f} s with `generate`. This is the level a policy starts from:",
        "",
        "| continuations | mean proxy reward | mean gold (VADER compound) | gold positive fraction "
        f"(compound >= {POSITIVE_THRESHOLD}) |",
        "|---|---|---|---|",
        f"| base LM samples | {m['sample_proxy'].mean():.3f} | {m['sample_gold'].mean():.3f} | "
        f"{(m['sample_gold'] >= POSITIVE_THRESHOLD).mean():.3f} |",
        f"| the real endings of the same prompts | {m['real_proxy'].mean():.3f} | {m['real_gold'].mean():.3f} | "
        f"{(m['real_gold'] >= POSITIVE_THRESHOLD).mean():.3f} |",
        "",
        f"The first {SHOWN_SAMPLES} samples (prompt in bold):",
        "",
        "| text | proxy | gold |",
        "|---|---|---|",
        *[
            f"| **{table_cell(p)}**{table_cell(s)} | {r:.2f} | {g:.2f} |"
            for p, s, r, g in list(zip(m["prompts"], m["samples"], m["sample_proxy"], m["sample_gold"]))[:SHOWN_SAMPLES]
        ],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="settings as key=value (see envs/text/pipeline/settings.py)")
    parser.add_argument("--cache-dir", default=None, help="default: $XDG_CACHE_HOME/tokengym or ~/.cache/tokengym")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    load_start = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        settings = settings_from_overrides(args.overrides)
        paths = build_text_models(settings, args.cache_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    build_s = (time.perf_counter() - start, time.process_time() - cpu_start)
    measured = measure(settings, paths)
    command = "python -m envs.text.pipeline.build " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report(command.strip(), settings, paths, build_s, (load_start, os.getloadavg()[0]), measured)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

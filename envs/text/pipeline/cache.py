"""Build the default base LM and reward model once and keep them: `ensure_text_models()` returns their folders,
building and saving them on first use (minutes on a CPU, no network)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from envs.text.pipeline.base_lm import (
    build_language_model,
    encode_sentences,
    heldout_perplexity,
    train_language_model,
    train_tokenizer,
)
from envs.text.pipeline.corpus import Sentence, load_corpus, split_heldout
from envs.text.pipeline.reward_model import (
    RankedGroup,
    evaluate_ranking,
    initial_reward_model,
    make_ranked_groups,
    train_reward_model,
)
from envs.text.pipeline.settings import TextModelSettings

log = logging.getLogger("tokengym.text")

HELDOUT_RM_PROMPTS = 1000  # held-out groups for pairwise accuracy (fewer if fewer held-out sentences)


@dataclass(frozen=True)
class TextModelPaths:
    """Folders loadable with `from_pretrained`: base_lm (causal LM + tokenizer), reward_model (sequence
    classifier with one label + the same tokenizer); metrics holds what the build measured."""

    folder: Path
    base_lm: Path
    reward_model: Path
    metrics: dict


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tokengym"


def cache_folder(settings: TextModelSettings, cache_dir: str | Path | None) -> Path:
    return Path(cache_dir or default_cache_dir()).expanduser() / f"text-models-{settings.fingerprint()}"


def ensure_text_models(
    settings: TextModelSettings | None = None, cache_dir: str | Path | None = None
) -> TextModelPaths:
    """The cached models for `settings` (the defaults if None), built and saved first if missing."""
    settings = settings or TextModelSettings()
    folder = cache_folder(settings, cache_dir)
    if not (folder / "metrics.json").is_file():
        log.info(
            "text models not in %s yet: building them, minutes on a CPU (results/text_models.md has the measured time)",
            folder,
        )
        build_text_models(settings, cache_dir, replace=False)
    return _paths(folder)


def build_text_models(
    settings: TextModelSettings, cache_dir: str | Path | None = None, replace: bool = True
) -> TextModelPaths:
    """Train both models into a temporary folder, then move it into the cache in one rename, so that an
    interrupted build leaves nothing half-written. replace=False keeps a folder another process finished."""
    folder = cache_folder(settings, cache_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        metrics = train_text_models(settings, staging)
        (staging / "settings.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _move_into_place(staging, folder, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _paths(folder)


def _move_into_place(staging: Path, folder: Path, replace: bool) -> None:
    if folder.exists():
        if not replace:
            return
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old)
    else:
        staging.rename(folder)


def _paths(folder: Path) -> TextModelPaths:
    return TextModelPaths(
        folder, folder / "base_lm", folder / "reward_model", json.loads((folder / "metrics.json").read_text())
    )


def train_text_models(settings: TextModelSettings, out_dir: Path) -> dict:
    """Stage 1 then stage 2, saved under out_dir/base_lm and out_dir/reward_model; returns the measurements."""
    held_in, held_out = split_corpus(settings)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(settings.seed)
    try:
        metrics = {"sentences_held_in": len(held_in), "sentences_held_out": len(held_out)}
        metrics |= _train_base_lm(settings, held_in, held_out, out_dir / "base_lm")
        metrics |= _train_reward_model(settings, held_in, held_out, out_dir / "base_lm", out_dir / "reward_model")
    finally:
        torch.set_num_threads(previous_threads)
    return metrics


def split_corpus(settings: TextModelSettings) -> tuple[list[Sentence], list[Sentence]]:
    """(held-in, held-out) sentences, labelled when the labeller is human; the same split every time."""
    sentences = load_corpus(settings.text_files, settings.file_labels if settings.labeller == "human" else [])
    return split_heldout(sentences, settings.heldout_fraction, settings.split_seed)


def heldout_ranked_groups(settings: TextModelSettings, held_out: list[Sentence]) -> list[RankedGroup]:
    """The held-out evaluation groups: prompts and responses from held-out sentences only, the same every time."""
    return make_ranked_groups(
        held_out,
        HELDOUT_RM_PROMPTS,
        settings.responses_per_prompt,
        settings.prompt_words,
        settings.labeller,
        random.Random(settings.split_seed),
    )


def _train_base_lm(settings, held_in, held_out, out_dir: Path) -> dict:
    start = time.perf_counter()
    tokenizer = train_tokenizer([s.text for s in held_in], settings.vocab_size, settings.context_length)
    tokenizer_s = time.perf_counter() - start
    train_ids = encode_sentences(tokenizer, [s.text for s in held_in])
    heldout_ids = encode_sentences(tokenizer, [s.text for s in held_out])
    model = build_language_model(tokenizer, settings)
    log.info(
        "base LM: %d parameters, vocabulary %d, %d held-in tokens",
        model.num_parameters(),
        len(tokenizer),
        sum(map(len, train_ids)),
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    train_language_model(model, train_ids, tokenizer.pad_token_id, settings)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    perplexity = heldout_perplexity(model, heldout_ids, tokenizer.pad_token_id)
    log.info("base LM: held-out perplexity %.1f after %.0f s", perplexity, train_s)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "vocab_size": len(tokenizer),
        "lm_parameters": model.num_parameters(),
        "lm_train_tokens_per_epoch": sum(map(len, train_ids)),
        "tokenizer_s": round(tokenizer_s, 1),
        "lm_train_s": round(train_s, 1),
        "lm_train_cpu_s": round(train_cpu_s, 1),
        "lm_heldout_perplexity": round(perplexity, 2),
    }


def training_ranked_groups(settings: TextModelSettings, held_in: list[Sentence]) -> list[RankedGroup]:
    """The ranked comparisons the reward model learns from (and DPO, envs/text/pipeline/dpo.py), the same every time."""
    return make_ranked_groups(
        held_in,
        settings.rm_prompts,
        settings.responses_per_prompt,
        settings.prompt_words,
        settings.labeller,
        random.Random(settings.seed),
    )


def _train_reward_model(settings, held_in, held_out, base_lm_dir: Path, out_dir: Path) -> dict:
    train_groups = training_ranked_groups(settings, held_in)
    heldout_groups = heldout_ranked_groups(settings, held_out)
    tokenizer = AutoTokenizer.from_pretrained(base_lm_dir)
    model = initial_reward_model(base_lm_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    train_reward_model(model, tokenizer, train_groups, settings)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    held_in_eval = evaluate_ranking(model, tokenizer, train_groups[:HELDOUT_RM_PROMPTS])
    held_out_eval = evaluate_ranking(model, tokenizer, heldout_groups)
    log.info(
        "reward model: held-out pairwise accuracy %.3f (held-in %.3f) after %.0f s",
        held_out_eval["pairwise_accuracy"],
        held_in_eval["pairwise_accuracy"],
        train_s,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "rm_train_groups": len(train_groups),
        "rm_heldout_groups": len(heldout_groups),
        "rm_train_s": round(train_s, 1),
        "rm_train_cpu_s": round(train_cpu_s, 1),
        "rm_heldout_pairwise_accuracy": round(held_out_eval["pairwise_accuracy"], 4),
        "rm_heldout_loss": round(held_out_eval["loss"], 4),
        "rm_heldin_pairwise_accuracy": round(held_in_eval["pairwise_accuracy"], 4),
    }

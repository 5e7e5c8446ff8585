"""Load any Hugging Face causal LM (the policy) or sequence classifier (the reward) by hub name or local folder,
through `from_pretrained`, with clear errors for a missing model and for mismatched vocabularies."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from core.errors import ConfigError


def load_causal_lm(name_or_path: str | Path):
    """(model, tokenizer) of a causal LM, in eval mode; the tokenizer's ids are checked to fit the model."""
    tokenizer = load_tokenizer(name_or_path)
    model = _from_pretrained(AutoModelForCausalLM, name_or_path, "policy model (a causal LM)")
    require_tokenizer_fits_model(tokenizer, model, "policy")
    return model.eval(), tokenizer


def load_tokenizer(name_or_path: str | Path):
    return _from_pretrained(AutoTokenizer, name_or_path, "policy tokenizer")


def load_reward_model(name_or_path: str | Path):
    """(model, tokenizer) of a sequence classifier, in eval mode. A tokenizer without a pad token (GPT-2's)
    pads with its EOS token, and the model is told which id that is, so batches of texts can be scored."""
    tokenizer = _from_pretrained(AutoTokenizer, name_or_path, "reward tokenizer")
    model = _from_pretrained(AutoModelForSequenceClassification, name_or_path, "reward model (a sequence classifier)")
    require_tokenizer_fits_model(tokenizer, model, "reward")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def _from_pretrained(auto_class, name_or_path: str | Path, what: str):
    text, local = str(name_or_path), Path(name_or_path).expanduser()
    if not local.exists() and (local.is_absolute() or text.startswith((".", "~"))):
        raise _cannot_load(what, text, f"there is no folder {local}")
    try:
        with torch.device("cpu"):  # loaded on the CPU whatever the default device; the run places the model
            return auto_class.from_pretrained(str(local) if local.exists() else text)  # else a hub name, e.g. "gpt2"
    except (OSError, ValueError) as err:
        raise _cannot_load(what, text, (str(err).strip().splitlines() or [type(err).__name__])[0]) from None


def _cannot_load(what: str, name: str, reason: str) -> ConfigError:
    return ConfigError(
        f"cannot load the {what} from {name!r}: {reason.rstrip('.')}. Give a folder written by "
        f"save_pretrained (for the default models: `python -m envs.text.pipeline.build`), or a "
        f"Hugging Face model name that is in the local Hugging Face cache (or reachable online)"
    )


def require_tokenizer_fits_model(tokenizer, model, role: str) -> None:
    """Every id the tokenizer can produce must index the model's embedding table."""
    n_tokens, n_embeddings = len(tokenizer), model.get_input_embeddings().num_embeddings
    if n_tokens > n_embeddings:
        raise ConfigError(
            f"the {role} tokenizer has {n_tokens} tokens but the {role} model's embedding has "
            f"{n_embeddings} rows; load the tokenizer saved with that model"
        )


def require_same_vocabulary(policy_tokenizer, reward_tokenizer) -> None:
    """Token ids can pass from the policy to the reward model only if both tokenizers map the same strings to
    the same ids; otherwise stop with both sizes named."""
    policy_vocab, reward_vocab = policy_tokenizer.get_vocab(), reward_tokenizer.get_vocab()
    if policy_vocab == reward_vocab:
        return
    differing = len(set(policy_vocab.items()) ^ set(reward_vocab.items()))
    raise ConfigError(
        f"vocabulary mismatch: the policy tokenizer has {len(policy_vocab)} tokens and the reward tokenizer "
        f"{len(reward_vocab)} ({differing} token-id entries differ), so token ids cannot be passed between them. "
        f"Use a reward model trained from the policy's base LM (same tokenizer), or score the decoded text "
        f"re-tokenised by the reward model's own tokenizer"
    )


@contextmanager
def load_report_silenced() -> Iterator[None]:
    """Inside the block, transformers does not log its load report (the weights a `from_pretrained` found
    missing, unexpected or of another shape), for a load whose missing weights are new by design and whose caller
    says so itself. Errors are still raised."""
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

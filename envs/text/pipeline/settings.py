"""The settings that decide the default base language model and reward model.

The defaults train both in minutes on one CPU thread (results/text_models.md has the measured time). The cache
folder of a build is named by a hash of these settings, so changing any of them builds a new pair instead of
loading a stale one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from core.errors import ConfigError

RT_POLARITY = Path(__file__).resolve().parents[4] / "shared" / "data" / "rt-polarity"
LABELLERS = ("human", "gold")


@dataclass
class TextModelSettings:
    """Data, sizes and training lengths of the base LM (stage 1) and the reward model (stage 2).

    text_files: one sentence per line (read with split('\\n')); relative paths are taken from the current
        folder. They are split into held-in and held-out sentences once, by `split_seed`.
    file_labels: the human label of every line of each text file (1 positive, 0 negative), one per file.
    labeller: who ranks the reward model's responses. "human": the file labels (the label of the review a
        response comes from); "gold": the gold scorer (VADER compound), for text without labels.
    heldout_fraction: share of sentences kept out of all training, for perplexity and pairwise accuracy.
    vocab_size, context_length, n_layer, n_embd, n_head: byte-level BPE vocabulary and GPT-2 shape; the
        reward model has the base LM's trunk and tokenizer.
    lm_epochs, lm_batch_size, lm_learning_rate: AdamW on the next-token loss, batches of sentences of
        similar length, linear warm-up over 5% of the steps then cosine decay to 10% of the rate.
    prompt_words: a prompt is the first `prompt_words` words of a held-in sentence.
    responses_per_prompt: K, the number of ranked responses per prompt (InstructGPT used 4 to 9).
    rm_prompts, rm_epochs, rm_batch_prompts, rm_learning_rate: the reward model's training set size (prompts,
        each with K responses), passes over it, prompts per batch (all K responses of a prompt share a batch),
        and AdamW rate.
    seed, split_seed, torch_threads: randomness of training, of the held-out split, and CPU threads (1: on a
        2-core machine busy with other jobs, two threads ran these small models 5 to 20 times slower than one).
    """

    text_files: list[str] = field(
        default_factory=lambda: [str(RT_POLARITY / "rt-polarity.pos"), str(RT_POLARITY / "rt-polarity.neg")]
    )
    file_labels: list[int] = field(default_factory=lambda: [1, 0])
    labeller: str = "gold"
    heldout_fraction: float = 0.1
    vocab_size: int = 4096
    context_length: int = 128
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    lm_epochs: int = 8
    lm_batch_size: int = 16
    lm_learning_rate: float = 2e-3
    prompt_words: int = 4
    responses_per_prompt: int = 4
    rm_prompts: int = 3000
    rm_epochs: int = 1
    rm_batch_prompts: int = 16
    rm_learning_rate: float = 3e-4
    seed: int = 0
    split_seed: int = 0
    torch_threads: int = 1

    def __post_init__(self):
        positive = (
            "vocab_size",
            "context_length",
            "n_layer",
            "n_embd",
            "n_head",
            "lm_epochs",
            "lm_batch_size",
            "lm_learning_rate",
            "prompt_words",
            "rm_prompts",
            "rm_epochs",
            "rm_batch_prompts",
            "rm_learning_rate",
            "torch_threads",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction={self.heldout_fraction} must lie strictly between 0 and 1")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if self.responses_per_prompt < 2:
            raise ConfigError(f"responses_per_prompt={self.responses_per_prompt} must be >= 2 (K=2 is pairs)")
        if self.labeller not in LABELLERS:
            raise ConfigError(f"labeller={self.labeller!r} is unknown; valid: {', '.join(LABELLERS)}")
        if not self.text_files:
            raise ConfigError("text_files is empty; give at least one text file, one sentence per line")
        if self.labeller == "human" and len(self.file_labels) != len(self.text_files):
            raise ConfigError(
                f"labeller=human needs one label per text file: {len(self.text_files)} text_files "
                f"but file_labels={list(self.file_labels)}; give file_labels, or labeller=gold "
                f"to rank by the gold scorer"
            )

    def fingerprint(self) -> str:
        """A short hash of every setting, with the text files as absolute paths."""
        values = dataclasses.asdict(self)
        values["text_files"] = [str(Path(p).expanduser().resolve()) for p in self.text_files]
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def settings_from_overrides(overrides: dict | list[str] | None = None) -> TextModelSettings:
    """The defaults with `overrides` merged in, type-checked: a dict, or `key=value` strings as on a command
    line (`text_files=[my.txt] labeller=gold`)."""
    valid = ", ".join(f.name for f in dataclasses.fields(TextModelSettings))
    values = OmegaConf.from_dotlist(overrides) if isinstance(overrides, list) else overrides
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TextModelSettings), values or {})
    except ConfigKeyError as err:
        raise ConfigError(f"unknown text-model setting {err.key}; valid: {valid}") from None
    except ValidationError as err:
        raise ConfigError(f"bad value for text-model setting {err.key}: {str(err.msg).splitlines()[0]}") from None
    settings = OmegaConf.to_object(merged)
    assert isinstance(settings, TextModelSettings)  # a structured config becomes its dataclass
    return settings

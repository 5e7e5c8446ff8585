"""Sentences to train on: read from text files, labelled, split once into held-in and held-out sets."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError


@dataclass(frozen=True)
class Sentence:
    text: str
    label: int | None  # the human label (1 positive, 0 negative) where the file has one


def read_sentences(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 file, stripped; split('\\n') because some review files hold U+0085,
    which str.splitlines() would also split on."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"text file {path} not found. The text models train on sentences, one per line, from the setting "
            f"text_files (default: the movie reviews in ../shared/data/rt-polarity/, beside the repository). "
            f"Put that file at {path}, or point text_files=[/path/to/your.txt] at your own text "
            f"(with labeller=gold if it has no sentiment labels)"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").split("\n")]
    sentences = [line for line in lines if line]
    if not sentences:
        raise ConfigError(f"text file {path} holds no text; give a file with one sentence per line")
    return sentences


def load_corpus(text_files: list[str], file_labels: list[int]) -> list[Sentence]:
    """Every sentence of every file, each with its file's label (None where no labels are given)."""
    labels = list(file_labels) if file_labels else [None] * len(text_files)
    return [Sentence(text, label) for path, label in zip(text_files, labels) for text in read_sentences(path)]


def split_heldout(
    sentences: list[Sentence], heldout_fraction: float, seed: int
) -> tuple[list[Sentence], list[Sentence]]:
    """A seeded shuffle, then the last `heldout_fraction` of it is held out (at least one sentence each)."""
    shuffled = list(sentences)
    random.Random(seed).shuffle(shuffled)
    n_heldout = min(max(1, round(len(shuffled) * heldout_fraction)), len(shuffled) - 1)
    if n_heldout < 1:
        raise ConfigError(
            f"{len(shuffled)} sentence(s) cannot be split into held-in and held-out sets; give at least 2"
        )
    return shuffled[:-n_heldout], shuffled[-n_heldout:]

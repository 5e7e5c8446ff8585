"""SeqGAN's discriminator D_phi (Yu et al. 2017, sec. 4): the CNN text classifier of Kim 2014 with a highway
layer, telling real sequences from generated ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.checks import require
from envs.sequences import evaluating


class Highway(nn.Module):
    """y = t * relu(W_H x) + (1 - t) * x, t = sigmoid(W_T x + b_T) (Srivastava et al. 2015); b_T starts at -2
    as in the SeqGAN code, so the layer starts close to the identity."""

    def __init__(self, size: int):
        super().__init__()
        self.transform, self.gate = nn.Linear(size, size), nn.Linear(size, size)
        nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))
        return t * F.relu(self.transform(x)) + (1 - t) * x


class Discriminator(nn.Module):
    """The CNN text classifier of Kim 2014 as SeqGAN uses it: embeddings, one convolution per window size with
    ReLU and max-over-time pooling, a highway layer, dropout, and two-class logits (generated, real)."""

    def __init__(
        self,
        vocab_size: int,
        length: int,
        embedding_dim: int,
        filter_sizes: list[int],
        num_filters: list[int],
        dropout: float,
    ):
        super().__init__()
        require(
            max(filter_sizes) <= length,
            f"algo.dis_filter_sizes={filter_sizes}: a window is longer than "
            f"the {length}-token sequences; drop the sizes above {length}",
        )
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, n, k) for k, n in zip(filter_sizes, num_filters))
        self.highway = Highway(sum(num_filters))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(sum(num_filters), 2)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        x = self.embedding(sequences).transpose(1, 2)  # [B, E, T]
        pooled = torch.cat([F.relu(conv(x)).amax(2) for conv in self.convs], 1)
        return self.output(self.dropout(self.highway(pooled)))

    def prob_real(self, sequences: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        with evaluating(self):
            return torch.cat([torch.softmax(self(chunk), 1)[:, 1] for chunk in sequences.split(batch_size)])

"""Seed streams: every random draw derives from a recorded seed and the channel's name.

Deriving per-channel streams from the name (not the channel's position) makes a channel's
result the same whether it is analysed alone or with others.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def channel_entropy(seed: int, channel: str, purpose: str) -> list[int]:
    """The entropy words for one (seed, channel, purpose) stream."""
    return [int(seed), zlib.crc32(channel.encode()), zlib.crc32(purpose.encode())]


def channel_rng(seed: int, channel: str, purpose: str) -> np.random.Generator:
    """A numpy generator for one channel and one purpose (e.g. "split-half")."""
    return np.random.default_rng(channel_entropy(seed, channel, purpose))


def channel_torch_generator(seed: int, channel: str, purpose: str) -> torch.Generator:
    """A CPU torch generator for one channel and one purpose (e.g. "jitter")."""
    words = np.random.SeedSequence(channel_entropy(seed, channel, purpose)).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))

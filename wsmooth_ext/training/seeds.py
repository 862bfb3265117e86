"""The random streams of a training run, each a pure function of (seed, stream, epoch): what makes a resumed
run equal an uninterrupted one (nothing random is carried between epochs but model and optimizer state)."""

from __future__ import annotations

_MASK63 = (1 << 63) - 1
# streams of derive_seed: the independent random streams of a training run
STREAM_TRAIN_NOISE, STREAM_EVAL_NOISE, STREAM_SHUFFLE, STREAM_AUGMENT = 1, 2, 3, 4


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for sub-stream ``parts`` of ``seed`` (SplitMix64 finalizer over the parts)."""
    z = seed & 0xFFFFFFFFFFFFFFFF
    for p in parts:
        z = (z + 0x9E3779B97F4A7C15 * (p + 1)) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z & _MASK63

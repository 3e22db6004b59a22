"""MinHash signatures and LSH banding for near-duplicate detection (numpy + hashlib only).

Each text becomes a set of word k-grams ("shingles"); a signature keeps, for each of
`num_perm` hash functions, the minimum hash over the set. The fraction of equal signature
entries estimates the Jaccard similarity of two sets. LSH bands find candidate pairs
without comparing everything with everything; candidates are confirmed on the estimate.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

_MERSENNE_SHIFT = np.uint64(32)


def shingles(text: str, k: int = 5) -> set[str]:
    words = text.lower().split()
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


class MinHasher:
    """Multiply-shift hash family h_i(x) = (a_i·x + b_i) mod 2^64 >> 32 over 64-bit shingle hashes."""

    def __init__(self, num_perm: int = 128, seed: int = 1, k: int = 5) -> None:
        rng = np.random.default_rng(seed)
        self.k = k
        self.num_perm = num_perm
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        values = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
                for s in shingles(text, self.k)
            ),
            dtype=np.uint64,
        )
        with np.errstate(over="ignore"):
            hashed = (values[:, None] * self.a[None, :] + self.b[None, :]) >> _MERSENNE_SHIFT
        signature: np.ndarray = hashed.min(axis=0)
        return signature


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


class LshIndex:
    """Signatures split into bands; texts sharing any band are candidates."""

    def __init__(self, num_perm: int = 128, bands: int = 32) -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.bands = bands
        self.rows = num_perm // bands
        self.buckets: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(bands)]
        self.signatures: list[np.ndarray] = []

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def most_similar(self, signature: np.ndarray) -> float:
        """Highest estimated Jaccard similarity to anything in the index (0 when nothing shares a band)."""
        best = 0.0
        seen: set[int] = set()
        for band, key in enumerate(self._band_keys(signature)):
            for index in self.buckets[band].get(key, ()):
                if index not in seen:
                    seen.add(index)
                    best = max(best, estimated_jaccard(signature, self.signatures[index]))
        return best

    def add(self, signature: np.ndarray) -> None:
        index = len(self.signatures)
        self.signatures.append(signature)
        for band, key in enumerate(self._band_keys(signature)):
            self.buckets[band][key].append(index)

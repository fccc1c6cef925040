"""De-duplication and content-stable choices: perceptual-hash distance, near-duplicate clusters (which
clean drops and split keeps together), and the seeded hash that picks, orders and splits by content."""

from __future__ import annotations

import hashlib

__all__ = ["unit_hash", "hamming", "near_pairs", "near_duplicate_clusters"]


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A number in [0, 1) that depends only on the seed and the key: stable when other images come and go."""
    digest = hashlib.sha256(f"{seed}:{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def near_pairs(phashes: list[str], distance: int) -> list[tuple[int, int, int]]:
    """(i, j, bits) for every i < j whose hashes are within `distance` bits."""
    import numpy as np

    out = []
    if phashes:
        bits = np.unpackbits(np.array([[int(h, 16)] for h in phashes], dtype=">u8").view(np.uint8), axis=1)
        for i in range(len(phashes) - 1):
            d = (bits[i + 1 :] != bits[i]).sum(axis=1)
            out += [(i, i + 1 + int(j), int(d[j])) for j in np.nonzero(d <= distance)[0]]
    return out


def near_duplicate_clusters(phashes: list[str], distance: int) -> list[int]:
    """Cluster id per hash (the smallest index in its cluster): hashes within `distance` bits are linked
    (transitively)."""
    from scipy.cluster.hierarchy import DisjointSet

    n = len(phashes)
    ds = DisjointSet(range(n))
    for i, j, _ in near_pairs(phashes, distance):
        ds.merge(i, j)
    first = {}
    for members in ds.subsets():
        first.update(dict.fromkeys(members, min(members)))
    return [first[i] for i in range(n)]

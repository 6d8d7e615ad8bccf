"""An independent Python implementation of strata's sampling hash and split rule, as
documented in crates/strata-functions/src/hash.rs and docs/curation.md. If strata and this file
agree on which rows go where, the row set is a property of (seed, key), not of the
engine that computed it."""
from __future__ import annotations

import math
import struct

import xxhash

M64 = (1 << 64) - 1


def derive_seed(seed: int, stream: int) -> int:
    z = (seed ^ ((stream * 0x9E3779B97F4A7C15) & M64)) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def encode(values) -> bytes:
    out = bytearray()
    for v in values:
        if v is None:
            out.append(0x00)
        elif isinstance(v, bool):
            out += bytes([0x05, int(v)])
        elif isinstance(v, int) and v > (1 << 63) - 1:
            out.append(0x03)
            out += struct.pack("<Q", v)
        elif isinstance(v, int):
            out.append(0x02)
            out += struct.pack("<q", v)
        elif isinstance(v, float):
            v = 0.0 if v == 0.0 else (math.nan if math.isnan(v) else v)
            out.append(0x04)
            out += struct.pack("<d", v)
        else:
            b = str(v).encode()
            out.append(0x01)
            out += struct.pack("<Q", len(b))
            out += b
    return bytes(out)


def strata_hash(seed: int, stream: int, values) -> int:
    return xxhash.xxh3_64_intdigest(encode(values), seed=derive_seed(seed, stream))


def shuffle_key(seed: int, key) -> callable:
    """The shuffle key of copy `c` of the row with key columns `key`: the hash (stream 5)
    of its sample hash, split hash and copy index."""
    h_split, h_sample = strata_hash(seed, 1, key), strata_hash(seed, 2, key)
    return lambda c: strata_hash(seed, 5, [h_sample, h_split, c])


def split_rows(rows: list[dict], columns: list[str], key: list[str], cell: list[str], seed: int,
               train: float, validation: float) -> dict[str, list[dict]]:
    """Assigns each row to a split exactly as strata does: within each cell, rank by
    (split hash, sample hash); the first floor(n*train + 0.5) are train, up to
    floor(n*(train+validation) + 0.5) validation, the rest test."""
    cells: dict[tuple, list] = {}
    for r in rows:
        k = [r[c] for c in key]
        cells.setdefault(tuple(r[c] for c in cell), []).append((strata_hash(seed, 1, k), strata_hash(seed, 2, k), r))
    out = {"train": [], "validation": [], "test": []}
    for members in cells.values():
        members.sort(key=lambda m: (m[0], m[1]))
        n = len(members)
        cut1 = math.floor(n * train + 0.5)
        cut2 = math.floor(n * (train + validation) + 0.5)
        for rank, (_, _, r) in enumerate(members, start=1):
            out["train" if rank <= cut1 else "validation" if rank <= cut2 else "test"].append(r)
    return out

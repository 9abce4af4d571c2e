#!/usr/bin/env python3
"""Writes docs/assignment-vectors.json from an independent implementation of
the documented assignment function (src/persona/assignment.rs), so the Rust
code is checked against a second language. Run: scripts/assignment-vectors.py"""
import hashlib
import json
import pathlib

BUCKETS = 10_000


def bucket(salt: str, unit: str) -> int:
    digest = hashlib.sha256(f"{salt}:{unit}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def variant(weights, unit_bucket):
    total = sum(weights)
    cumulative = 0
    for index, weight in enumerate(weights):
        start = BUCKETS * cumulative // total
        cumulative += weight
        end = BUCKETS * cumulative // total
        if start <= unit_bucket < end:
            return index
    raise ValueError("no variant")


units = ["user-1", "user-2", "alice", "bob@example.org", "42", "Zoë", "session:7f3a", "ünïcode-ß", "a" * 256, "x"]
salts = ["einstein-warmth-1", "exp-1", "A.b_c-9"]
vectors = {
    "function": "bucket = uint64_be(sha256(salt + ':' + unit)[0:8]) mod 10000; variant i owns "
    "[floor(10000*sum(w[:i])/W), floor(10000*sum(w[:i+1])/W))",
    "buckets": [{"salt": s, "unit": u, "bucket": bucket(s, u)} for s in salts for u in units],
    "assignments": [
        {"salt": s, "weights": w, "unit": u, "variant": variant(w, bucket(s, u))}
        for s in salts
        for w in ([50, 50], [10, 90], [1, 2, 3], [0, 1], [33, 33, 34])
        for u in units[:4]
    ],
}
path = pathlib.Path(__file__).resolve().parent.parent / "docs" / "assignment-vectors.json"
path.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {path}")

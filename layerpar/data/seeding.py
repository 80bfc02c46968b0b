"""Stable seeds derived from integers, identical in every process and on every platform.

Python's ``hash()`` of a tuple of ints is deterministic but differs between 32- and 64-bit
builds and across Python versions, and seeding every random stream with the same number
correlates them; hashing a labelled byte string with BLAKE2 avoids both.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(domain: str, *parts: int) -> int:
    """Return a 63-bit seed determined by ``domain`` (e.g. "augment") and the integer ``parts``."""
    text = ":".join([domain, *(str(int(part)) for part in parts)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    # 63 bits keep the value positive and inside every seed range torch accepts.
    return int.from_bytes(digest, "little") >> 1


def generator_for(domain: str, *parts: int) -> torch.Generator:
    """Return a fresh CPU generator seeded with :func:`derive_seed` of the same arguments."""
    return torch.Generator().manual_seed(derive_seed(domain, *parts))

"""Exponential backoff with full jitter: the one pause rule for every retried request."""

from __future__ import annotations

import random

BASE = 0.5  # seconds before the first retry, at most
CAP = 30.0  # no pause is longer than this


def full_jitter(attempt: int, rng: random.Random | None = None) -> float:
    """The pause after failed attempt ``attempt`` (1-based): uniform in 0..min(CAP, BASE*2^(n-1)).

    The Referrals API client's retries and 429 pauses without a Retry-After use it, and so do
    the identity provider's retries.
    """
    ceiling = min(CAP, BASE * 2 ** (attempt - 1))
    return (rng or random).uniform(0, ceiling)

"""Eq. (2)-(3) against direct numpy computations; identity, symmetry and ties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from stimloop.science.similarity import similarity, similarity_to_many

vec = arrays(np.float64, 16, elements=st.floats(0, 10, allow_subnormal=False))
weights = arrays(np.float64, 16, elements=st.floats(-3, 3, allow_subnormal=False))


def direct(a1, a2, w):
    u1, u2 = a1 * w, a2 * w
    return u1 @ u2 / (np.sqrt(u1 @ u1) * np.sqrt(u2 @ u2))


@settings(max_examples=200, deadline=None)
@given(vec, vec, weights)
def test_pair_equals_numpy_is_symmetric_and_bounded(a1, a2, w):
    s = similarity(a1, a2, w)
    if np.linalg.norm(a1 * w) > 1e-6 and np.linalg.norm(a2 * w) > 1e-6:
        assert s == pytest.approx(direct(a1, a2, w), abs=1e-9)
        assert similarity(a1, a1, w) == pytest.approx(1.0)
    assert s == pytest.approx(similarity(a2, a1, w), abs=1e-12)
    assert -1 - 1e-9 <= s <= 1 + 1e-9


def test_zero_weighted_vector_gives_zero_not_nan():
    assert similarity(np.zeros(4), np.ones(4), np.ones(4)) == 0.0
    assert similarity(np.ones(4), np.ones(4), np.zeros(4)) == 0.0


def test_many_and_per_channel_broadcasting():
    rng = np.random.default_rng(0)
    a_ref, a_many, w = rng.random((3, 8)), rng.random((5, 3, 8)), rng.normal(size=(3, 8))
    got = similarity_to_many(a_ref, a_many, w).numpy()
    for n in range(5):
        for c in range(3):
            assert got[n, c] == pytest.approx(direct(a_ref[c], a_many[n, c], w[c]))


def test_pairwise_equals_the_scalar_form():
    rng = np.random.default_rng(3)
    a1, a2, w = rng.random((4, 9)), rng.random((5, 9)), rng.normal(size=9)
    a1[0] = 0.0  # an image with no weighted evidence: 0, never NaN
    from stimloop.science.similarity import pairwise

    got = pairwise(a1, a2, w).numpy()
    assert got.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            assert got[i, j] == pytest.approx(similarity(a1[i], a2[j], w), abs=1e-12)

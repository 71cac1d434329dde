"""Synthetic neurons (A.1.1): the Rayleigh-quotient direction, rates and Poisson recordings."""

from __future__ import annotations

import numpy as np
import pytest
from stimloop.science import synthetic as sy
from stimloop.science.responses import response_table


def test_preferred_direction_is_the_leading_eigenvector():
    rng = np.random.default_rng(0)
    a_in = rng.gamma(2, 1, (40, 12))
    a_in[:, 3] += 3  # feature 3 is more active for the preferred category
    a_out = rng.gamma(2, 1, (60, 12))
    w = sy.preferred_direction(a_in, a_out)
    gram = a_in.T @ a_in / 40 - a_out.T @ a_out / 60
    rayleigh = w @ gram @ w
    assert np.linalg.norm(w) == pytest.approx(1)
    np.testing.assert_allclose(gram @ w, rayleigh * w, atol=1e-9)
    assert rayleigh == pytest.approx(np.linalg.eigvalsh(gram)[-1])
    for _ in range(20):  # no other direction does better
        v = rng.normal(size=12)
        v /= np.linalg.norm(v)
        assert v @ gram @ v <= rayleigh + 1e-12
    assert (a_in @ w).mean() > (a_out @ w).mean()  # sign: the preferred category drives it
    sparse = sy.preferred_direction(a_in, a_out, support=3)
    keep = np.flatnonzero(sparse)
    assert len(keep) == 3 and 3 in keep
    sub = gram[np.ix_(keep, keep)]
    assert sparse[keep] @ sub @ sparse[keep] == pytest.approx(np.linalg.eigvalsh(sub)[-1])


def test_candidates_pick_the_eigenvector_that_separates_the_means():
    """Feature 0: the preferred images spread widely around the others' level (the largest
    second-moment difference, no mean difference); feature 1: they sit a little above."""
    rng = np.random.default_rng(1)
    a_in = np.stack(
        [rng.choice([-3.0, 3.0], 200) + rng.normal(0, 0.1, 200), 1.0 + rng.normal(0, 0.1, 200)],
        axis=1,
    )
    a_out = rng.normal(0, 0.1, (300, 2))
    leading = sy.preferred_direction(a_in, a_out)
    chosen = sy.preferred_direction(a_in, a_out, candidates=2)
    assert abs(leading[0]) == pytest.approx(1, abs=0.01)  # A.1.1's leading eigenvector
    assert chosen[1] == pytest.approx(1, abs=0.01)  # the mean-separating one, sign up
    assert (
        sy.mean_separation(a_in, a_out, chosen) > 5 > abs(sy.mean_separation(a_in, a_out, leading))
    )
    gram = a_in.T @ a_in / 200 - a_out.T @ a_out / 300
    np.testing.assert_allclose(gram @ chosen, (chosen @ gram @ chosen) * chosen, atol=1e-9)


def test_synthetic_neurons_prefer_bodies_and_fire_plausibly(synthetic_dataset):
    d = synthetic_dataset
    body, obj = d["truth_bodies"], d["truth_objects"]
    assert (body.mean(0) > obj.mean(0)).all()
    assert (body >= 0).all()
    peak = np.percentile(body, 95, axis=0)
    assert ((peak > 30) & (peak < 120)).all()  # best stimuli several times the 10 spikes/s
    neuron = d["neurons"][0]
    assert (np.count_nonzero(neuron.w) == round(0.02 * 2048)) and np.abs(neuron.mu).max() <= 1


def test_simulated_counts_have_poisson_means():
    rates = np.array([[0.0], [40.0]])
    config = sy.SyntheticConfig(repeats=4000)
    trials, cols = sy.simulate_counts(rates, ["quiet", "loud"], ["c"], seed=3, config=config)
    base = cols["baseline_count"].reshape(2, -1)
    resp = cols["response_count"].reshape(2, -1)
    assert base.mean() == pytest.approx(10 * 0.1, rel=0.05)
    assert resp[0].mean() == pytest.approx(10 * 0.2, rel=0.05)
    assert resp[1].mean() == pytest.approx(50 * 0.2, rel=0.05)
    table = response_table(trials, stimuli=["quiet", "loud"])
    np.testing.assert_allclose(table.mean[0], [0, 40], atol=1.5)


def test_simulation_is_seeded_per_channel():
    rates = np.full((5, 2), 20.0)
    a, _ = sy.simulate_counts(rates, list("abcde"), ["x", "y"], seed=1)
    b, _ = sy.simulate_counts(rates, list("abcde"), ["x", "y"], seed=1)
    c, _ = sy.simulate_counts(rates[:, :1], list("abcde"), ["x"], seed=1)
    np.testing.assert_array_equal(a.net_rate, b.net_rate)
    np.testing.assert_array_equal(a.net_rate[a.channel == "x"], c.net_rate)


def test_the_demo_neurons_prefer_bodies_on_average(synthetic_dataset):
    """The demo's channels (20 candidate eigenvectors): bodies above objects in every
    channel, significantly (Mann-Whitney, two-sided, noise-free responses to all images), and
    further apart than with A.1.1's leading eigenvector alone."""
    from scipy import stats
    from stimloop.demo import DEMO_NEURONS

    d = synthetic_dataset
    effects = {}
    for name, config in (("demo", DEMO_NEURONS), ("leading", sy.SyntheticConfig(sparsity=0.02))):
        neurons = sy.make_neurons(d["body_maps"], d["object_maps"], d["channels"], 1, config)
        body = sy.true_responses(neurons, d["body_maps"])
        obj = sy.true_responses(neurons, d["object_maps"])
        tests = [stats.mannwhitneyu(body[:, j], obj[:, j]) for j in range(len(neurons))]
        effects[name] = np.array([t.statistic / (len(body) * len(obj)) for t in tests])
        if name == "demo":
            assert (effects[name] > 0.5).all()
            assert all(t.pvalue < 0.05 for t in tests)
    assert effects["demo"].mean() > effects["leading"].mean()

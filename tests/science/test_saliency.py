"""Parallel backpropagation against a straightforward reference, eq. (7), methods, locality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from stimloop.science import saliency as sa
from stimloop.science.readout_model import bilinear_weights
from torch import nn


class TinyNet(nn.Module):
    """[m, 3, 28, 28] -> [m, 6, 7, 7], non-negative (ends in a ReLU like layer4[1])."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 5, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(5, 6, 3, padding=1),
            nn.AvgPool2d(2),
            nn.ReLU(),
        )
        with torch.no_grad():
            self.body[3].bias.add_(0.3)  # most features active
        self.requires_grad_(False)

    def forward(self, x):
        return self.body(x)


NET = TinyNet()


def reference(net, x_out, x_in, mu, w, sigma, points=lambda x: x[None]):
    """One autograd.grad per feature, scipy smoothing, eq. (5) and (6) by hand."""
    k = bilinear_weights(torch.tensor(mu, dtype=torch.float32), 7, 7)

    def read(x):
        return net(x).flatten(2) @ k

    a_out = read(x_out[None])[0].double().numpy()
    a_in = read(x_in[None])[0].double().numpy()
    beta = a_in * w * a_out * w / (np.linalg.norm(a_in * w) * np.linalg.norm(a_out * w))
    maps = []
    for x in (x_out, x_in):
        total = np.zeros(x.shape)
        for i in range(len(w)):
            if beta[i] <= 0:
                continue
            p = points(x).clone().requires_grad_(True)
            (g,) = torch.autograd.grad(read(p)[:, i].sum(), p)
            g = g.mean(0).double().numpy()
            radius = int(np.ceil(3 * sigma))
            g = np.stack(
                [
                    ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma)
                    for c in g
                ]
            )
            total += beta[i] * g / np.linalg.norm(g)
        maps.append(total)
    return beta, maps


def images(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, 28, 28, generator=gen), torch.rand(3, 28, 28, generator=gen)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_equals_the_straightforward_reference(strategy):
    x_out, x_in = images(1)
    w = np.array([0.5, -1.0, 2.0, 0.0, 1.5, 0.7])
    mu = (0.3, -0.5)
    config = sa.SaliencyConfig(sigma=1.5, coverage=1.0, strategy=strategy, chunk=4)
    result = sa.parallel_backprop(NET, x_out, x_in, mu, w, config)
    beta, (ref_out, ref_in) = reference(NET, x_out, x_in, mu, w, 1.5)
    np.testing.assert_allclose(result.beta, beta, atol=1e-6)
    assert result.s == pytest.approx(beta.sum(), abs=1e-6)
    np.testing.assert_allclose(result.map_out, ref_out, atol=1e-5)
    np.testing.assert_allclose(result.map_in, ref_in, atol=1e-5)
    assert result.norm_out == pytest.approx(np.linalg.norm(ref_out), abs=1e-5)
    assert np.linalg.norm(result.display_out) == pytest.approx(result.norm_out, rel=1e-5)


def test_smoothgrad_and_integrated_gradients_equal_their_references():
    x_out, x_in = images(2)
    w = np.array([1.0, 1.0, -0.5, 2.0, 0.3, 1.0])
    mu = (-0.2, 0.4)
    ig = sa.SaliencyConfig(
        method="integrated_gradients", method_options={"steps": 4}, sigma=1.0, coverage=1.0
    )
    result = sa.parallel_backprop(NET, x_out, x_in, mu, w, ig)
    steps = torch.arange(1, 5, dtype=torch.float32).view(-1, 1, 1, 1) / 4
    _, (ref_out, ref_in) = reference(NET, x_out, x_in, mu, w, 1.0, lambda x: steps * x[None])
    np.testing.assert_allclose(result.map_out, ref_out, atol=1e-5)
    np.testing.assert_allclose(result.map_in, ref_in, atol=1e-5)
    smooth = sa.SaliencyConfig(
        method="smoothgrad",
        method_options={"samples": 3, "noise": 0.2},
        coverage=1.0,
        seed=7,
        sigma=1.0,
    )
    a = sa.parallel_backprop(NET, x_out, x_in, mu, w, smooth)
    b = sa.parallel_backprop(NET, x_out, x_in, mu, w, smooth)
    np.testing.assert_array_equal(a.map_out, b.map_out)  # seeded
    noise_gen = torch.Generator().manual_seed(7)
    pts = sa.SmoothGrad(samples=3, noise=0.2).points(x_out, noise_gen)
    assert pts.min() >= 0 and pts.max() <= 1
    _, (ref_out, _) = reference(NET, x_out, x_in, mu, w, 1.0, lambda x: pts)
    np.testing.assert_allclose(a.map_out, ref_out, atol=1e-5)


def test_integrated_gradients_with_one_step_is_the_gradient():
    x_out, x_in = images(3)
    w = np.ones(6)
    one = sa.SaliencyConfig(
        method="integrated_gradients", method_options={"steps": 1}, coverage=1.0
    )
    grad = sa.SaliencyConfig(method="gradient", coverage=1.0)
    a = sa.parallel_backprop(NET, x_out, x_in, (0.0, 0.0), w, one)
    b = sa.parallel_backprop(NET, x_out, x_in, (0.0, 0.0), w, grad)
    np.testing.assert_allclose(a.map_out, b.map_out, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mu=st.tuples(st.floats(-1, 1), st.floats(-1, 1)),
    coverage=st.sampled_from([0.3, 0.8, 1.0]),
)
def test_eq7_bound_beta_sum_and_exact_coverage(seed, mu, coverage):
    x_out, x_in = images(seed)
    w = np.random.default_rng(seed).normal(size=6)
    result = sa.parallel_backprop(
        NET, x_out, x_in, mu, w, sa.SaliencyConfig(sigma=1.0, coverage=coverage)
    )
    assert result.beta.sum() == pytest.approx(result.s, abs=1e-6)
    assert result.norm_out <= result.s + 1e-5 and result.norm_in <= result.s + 1e-5  # eq. (7)
    positive = result.beta[result.beta > 0].astype(np.float64).sum()
    if positive > 0:
        used = result.beta[result.features].astype(np.float64).sum()
        assert result.covered == pytest.approx(used / positive)
        assert result.covered >= coverage - 1e-9
        fewer = result.beta[result.features[:-1]].astype(np.float64).sum()
        assert fewer / positive < coverage  # the fewest


def test_max_features_keeps_the_top_features_by_beta_and_says_what_they_cover():
    x_out, x_in = images(7)
    w = np.random.default_rng(7).normal(size=6)
    full = sa.parallel_backprop(NET, x_out, x_in, (0, 0), w, sa.SaliencyConfig(coverage=1.0))
    assert len(full.features) >= 2
    two = sa.parallel_backprop(
        NET, x_out, x_in, (0, 0), w, sa.SaliencyConfig(coverage=1.0, max_features=2)
    )
    assert list(two.features) == list(full.features[:2])
    positive = full.beta[full.beta > 0].astype(np.float64).sum()
    assert two.covered == pytest.approx(full.beta[full.features[:2]].sum() / positive)
    with pytest.raises(ValueError, match="max_features"):
        sa.SaliencyConfig(max_features=0)


def test_zero_similarity_gives_zero_maps_not_nan():
    x_out, x_in = images(4)
    result = sa.parallel_backprop(NET, x_out, x_in, (0, 0), np.zeros(6), sa.SaliencyConfig())
    assert result.s == 0.0 and result.covered == 1.0 and len(result.features) == 0
    assert not np.isnan(result.map_out).any() and (result.map_out == 0).all()
    assert result.norm_in == 0.0


def test_bad_settings_are_refused():
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="coverage"):
            sa.SaliencyConfig(coverage=bad)
    with pytest.raises(ValueError, match="method must be one of"):
        sa.SaliencyConfig(method="occlusion")


def test_default_pair_is_the_most_similar_and_ties_go_to_smaller_ids():
    rng = np.random.default_rng(0)
    a_obj, a_body, w = rng.random((5, 8)), rng.random((15, 8)), rng.normal(size=8)
    obj_ids = [f"o{i}" for i in range(5)]
    body_ids = [f"b{i:02d}" for i in range(15)]
    o, b, s = sa.default_pair(a_obj, a_body, w, obj_ids, body_ids)
    sims = [
        (np.dot(x * w, y * w) / np.linalg.norm(x * w) / np.linalg.norm(y * w), i, j)
        for i, x in enumerate(a_obj)
        for j, y in enumerate(a_body)
    ]
    best = max(sims)
    assert (o, b) == (obj_ids[best[1]], body_ids[best[2]]) and s == pytest.approx(best[0])
    twin = np.stack([a_body[3], a_body[3]])
    assert sa.default_pair(a_obj, twin, w, obj_ids, ["z", "a"])[1] == "a"


def test_strategy_is_chosen_per_device():
    assert sa.resolve_strategy("auto", torch.device("cpu")) == "loop"
    assert sa.resolve_strategy("auto", torch.device("cuda")) == "batched"
    assert sa.resolve_strategy("batched", torch.device("cpu")) == "batched"


def quadrant_mass(display: np.ndarray) -> float:
    """Fraction of the squared map in the top-left quadrant."""
    h, w = display.shape
    return float((display[: h // 2, : w // 2] ** 2).sum() / (display**2).sum())


def test_a_corner_neuron_looks_at_its_corner(synthetic_dataset, random_backbone):
    """Full ResNet-50 at 224 px: a synthetic neuron at the top-left cell puts most of its
    saliency there; one at the centre does not."""
    from PIL import Image
    from stimloop.science import synthetic as sy
    from stimloop.science.backbone import image_to_tensor

    d = synthetic_dataset
    config = sy.SyntheticConfig(sparsity=8 / 2048)
    neurons = sy.make_neurons(
        d["body_maps"],
        d["object_maps"],
        ["corner", "centre"],
        seed=0,
        config=config,
        locations=np.array([[-1.0, -1.0], [0.0, 0.0]]),
    )
    x_out = image_to_tensor(Image.fromarray(d["objects"][0].image))
    x_in = image_to_tensor(Image.fromarray(d["bodies"][0].image))
    masses = []
    for neuron in neurons:
        result = sa.parallel_backprop(
            random_backbone.model, x_out, x_in, neuron.mu, neuron.w, sa.SaliencyConfig(coverage=1.0)
        )
        assert result.s > 0 and len(result.features) <= 8
        masses.append((quadrant_mass(result.display_out), quadrant_mass(result.display_in)))
    assert min(masses[0]) > 0.5, masses
    assert max(masses[1]) < 0.5, masses


def test_the_api_offers_exactly_the_implemented_methods():
    from typing import get_args

    from stimloop_contract.configs import SaliencyMethod

    assert set(get_args(SaliencyMethod)) == set(sa.METHODS)
    with pytest.raises(ValueError, match="coverage"):
        sa.SaliencyConfig(coverage=1.5)
    with pytest.raises(ValueError, match="sigma"):
        sa.SaliencyConfig(sigma=-1.0)

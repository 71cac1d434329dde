"""Readout: bilinear sampling as grid_sample, batched equals alone, sparsity, serialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as nnf

from service.science import readout as ro


def grid_sample_features(maps: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The straightforward readout: grid_sample per channel, ``[N, C, F]``."""
    out = []
    for c in range(len(mu)):
        grid = mu[c].view(1, 1, 1, 2).expand(len(maps), 1, 1, 2)
        out.append(nnf.grid_sample(maps, grid, align_corners=True)[:, :, 0, 0])
    return torch.stack(out, dim=1)


def test_bilinear_readout_equals_grid_sample():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 16, 7, 7, generator=gen)
    mu = torch.rand(9, 2, generator=gen) * 2 - 1
    mu[0] = torch.tensor([-1.0, -1.0])
    mu[1] = torch.tensor([1.0, 1.0])
    mu[2] = torch.tensor([1.0, -1.0 / 3])
    expected = grid_sample_features(maps, mu)
    torch.testing.assert_close(ro.readout_features(maps, mu, chunk=2), expected)
    k = ro.bilinear_weights(mu, 7, 7)
    torch.testing.assert_close(torch.einsum("nfp,cp->ncf", maps.flatten(2), k), expected)
    torch.testing.assert_close(k.sum(-1), torch.ones(9))
    assert ((k > 0).sum(-1) <= 4).all()


def test_model_forward_equals_features_dot_w():
    torch.manual_seed(0)
    model = ro.GaussianReadout(3, 16, 7, 7)
    with torch.no_grad():
        model.w.normal_()
        model.b.normal_()
        model.mu.uniform_(-1, 1)
    maps = torch.rand(4, 16, 7, 7)
    expected = (grid_sample_features(maps, model.mu.detach()) * model.w.detach()).sum(-1) + model.b
    got = model(maps.flatten(2).transpose(1, 2))
    torch.testing.assert_close(got, expected.detach())
    per_sample = model.mu.detach()[None].expand(4, 3, 2)
    torch.testing.assert_close(model(maps.flatten(2).transpose(1, 2), per_sample), got)


def test_make_split():
    s = ro.make_split(100, (60, 20, 10), seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (60, 20, 10)
    assert len(set(s.train) | set(s.val) | set(s.test)) == 90
    again = ro.make_split(100, (60, 20, 10), seed=3)
    assert np.array_equal(s.train, again.train)
    assert not np.array_equal(s.train, ro.make_split(100, (60, 20, 10), seed=4).train)
    with pytest.raises(ValueError, match="needs 475 bodies, but only 100"):
        ro.make_split(100, (400, 50, 25), seed=0)


def small_problem(channels: int = 4, n: int = 200, f: int = 32, seed: int = 0):
    """Random non-negative maps and sparse linear-readout targets at known cells."""
    rng = np.random.default_rng(seed)
    maps = rng.gamma(2.0, 1.0, (n, f, 7, 7)).astype(np.float32)
    mu = torch.as_tensor(rng.integers(0, 7, (channels, 2)) / 3 - 1, dtype=torch.float32)
    w = rng.normal(size=(channels, f)) * (rng.random((channels, f)) < 0.2)
    a = ro.readout_features(torch.as_tensor(maps), mu).numpy()
    targets = (a * w[None]).sum(-1) * 5 + 20 + rng.normal(0, 1, (n, channels))
    return maps, targets, mu.numpy()


CFG = ro.ReadoutConfig(lr=3e-3, epochs=15, split=(150, 25, 25), batch_size=32)


def test_fitting_channels_together_equals_fitting_each_alone():
    maps, targets, _ = small_problem()
    names = ["a", "b", "c", "d"]
    split = ro.make_split(len(maps), CFG.split, seed=1)
    sil = maps[split.train][:, :, ::-1].copy()  # any maps stand in for silhouettes
    together = ro.fit_readouts(maps, targets, names, split, silhouette_maps=sil, config=CFG, seed=5)
    for j, name in enumerate(names):
        alone = ro.fit_readouts(
            maps, targets[:, [j]], [name], split, silhouette_maps=sil, config=CFG, seed=5
        )
        np.testing.assert_allclose(alone.mu[0], together.mu[j], atol=1e-4)
        np.testing.assert_allclose(alone.w[0], together.w[j], atol=1e-4)
        np.testing.assert_allclose(alone.b[0], together.b[j], atol=1e-3)
        assert alone.best_epoch[0] == together.best_epoch[j]


def test_l_half_penalty_makes_w_sparser():
    maps, targets, mu = small_problem(channels=3, seed=2)
    split = ro.make_split(len(maps), CFG.split, seed=0)

    def fit(weight: float) -> ro.FittedReadout:
        cfg = ro.ReadoutConfig(
            lr=1e-3, epochs=60, split=CFG.split, batch_size=32, l_half_weight=weight
        )
        return ro.fit_readouts(maps, targets, ["a", "b", "c"], split, config=cfg, seed=0)

    def count_large(w: np.ndarray) -> np.ndarray:
        return (np.abs(w) > 0.01 * np.abs(w).max(axis=1, keepdims=True)).sum(axis=1)

    penalised, plain = fit(0.1), fit(0.0)  # 0.1: the paper's weight
    assert (count_large(penalised.w) < count_large(plain.w) / 2).all()
    assert (penalised.r["test"] > 0.5).all()
    np.testing.assert_allclose(penalised.mu, mu, atol=0.1)  # the location is found too


def test_result_is_complete_and_round_trips():
    maps, targets, _ = small_problem(channels=2)
    ids = [f"body_{i:03d}" for i in range(len(maps))]
    split = ro.make_split(len(maps), CFG.split, seed=0)
    calls = []
    fit = ro.fit_readouts(
        maps,
        targets,
        ["x", "y"],
        split,
        body_ids=ids,
        config=CFG,
        seed=11,
        weights_sha256="abc",
        progress=lambda *a: calls.append(a),
    )
    assert [c[0] for c in calls] == list(range(1, CFG.epochs + 1))
    assert fit.split_ids["test"] == [ids[i] for i in split.test]
    for name in ("train", "val", "test"):
        pred = fit.predict(maps[getattr(split, name)])
        rec = targets[getattr(split, name)]
        np.testing.assert_allclose(fit.loss[name], ((pred - rec) ** 2).mean(0), rtol=1e-5)
        for c in range(2):
            r, p = ro.pearson(pred[:, c], rec[:, c])
            assert fit.r[name][c] == pytest.approx(r) and fit.p[name][c] == pytest.approx(p)
    again = ro.FittedReadout.from_arrays(fit.arrays(), fit.metadata())
    np.testing.assert_array_equal(again.predict(maps), fit.predict(maps))
    assert again.seed == 11 and again.weights_sha256 == "abc" and again.config == CFG
    assert (np.abs(fit.mu) <= 1).all()
    assert fit.select(["y"]).w.shape == (1, 32)


def test_bad_targets_are_refused_before_fitting():
    maps, targets, _ = small_problem(channels=2)
    split = ro.make_split(len(maps), CFG.split, seed=0)
    flat = targets.copy()
    flat[:, 1] = 3.0
    with pytest.raises(ValueError, match="constant or missing"):
        ro.fit_readouts(maps, flat, ["a", "b"], split, config=CFG)
    with pytest.raises(ValueError, match="unique"):
        ro.fit_readouts(maps, targets, ["a", "a"], split, config=CFG)
    with pytest.raises(ValueError, match="split needs"):
        ro.ReadoutConfig(split=(10, 1, 1))


def test_missing_targets_are_masked_not_fatal():
    maps, targets, _ = small_problem(channels=2)
    targets[::7, 0] = np.nan
    split = ro.make_split(len(maps), CFG.split, seed=0)
    fit = ro.fit_readouts(maps, targets, ["a", "b"], split, config=CFG)
    assert np.isfinite(fit.w).all() and np.isfinite(fit.r["test"]).all()


def test_cancellation_between_epochs():
    maps, targets, _ = small_problem(channels=1)
    split = ro.make_split(len(maps), CFG.split, seed=0)
    with pytest.raises(InterruptedError):
        ro.fit_readouts(maps, targets, ["a"], split, config=CFG, should_stop=lambda: True)

"""Readout: bilinear sampling as grid_sample, batched equals alone, sparsity, serialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stimloop.science import readout as ro
from torch.nn import functional as nnf


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


def test_loss_is_masked_mse_plus_the_smoothed_l_half_penalty():
    """Sec. 4's loss against a plain loop over channels and weights."""
    from stimloop.science.trainer import LossConfig, readout_loss

    gen = torch.Generator().manual_seed(0)
    pred, y = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)
    mask = torch.ones(6, 2)
    mask[1, 0] = mask[4, 1] = 0
    w = torch.randn(2, 5, generator=gen)
    got = readout_loss(pred, y, mask, w, LossConfig(0.1, 1e-6))
    for c in range(2):
        rows = [i for i in range(6) if mask[i, c]]
        mse = sum((pred[i, c] - y[i, c]).item() ** 2 for i in rows) / len(rows)
        penalty = sum((w[c, i].item() ** 2 + 1e-6) ** 0.25 for i in range(5))
        assert got[c].item() == pytest.approx(mse + 0.1 * penalty, rel=1e-5)


def test_penalty_steps_pull_unsupported_weights_to_zero():
    """From a dense start, steps with the L_{1/2} term shrink the weights the data do not
    need far more than the ones they do, and more than steps without it."""
    from stimloop.science.trainer import LossConfig, train_step

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 49, 8, generator=gen)
    true_w = torch.tensor([3.0, -2.0, 0, 0, 0, 0, 0, 0])
    y = (x[:, 24] @ true_w)[:, None] + 0.3 * torch.randn(64, 1, generator=gen)  # centre cell
    finals = {}
    for weight in (0.0, 0.1):  # 0.1: the paper's weight
        model = ro.GaussianReadout(1, 8, 7, 7)
        with torch.no_grad():
            model.w.copy_(true_w + 0.2)  # dense: every weight off zero
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(300):
            train_step(
                model,
                opt,
                x,
                y,
                torch.ones_like(y),
                torch.arange(64),
                torch.zeros(64, 1, 2),
                LossConfig(weight, 1e-6),
            )
        finals[weight] = model.w.detach()[0]
    assert finals[0.1][2:].abs().max() < 0.02 and finals[0.0][2:].abs().max() > 0.05
    assert finals[0.1][:2].abs().min() > 1.0  # the supported weights stay


def test_graph_ready_fit_equals_the_eager_loop():
    """The static-buffer epochs (captured as a CUDA graph on a GPU) are the eager loop."""
    maps, targets, _ = small_problem(channels=3, n=150, f=16)
    config = ro.ReadoutConfig(lr=3e-3, epochs=12, split=(100, 25, 25), batch_size=32)
    split = ro.make_split(len(maps), config.split, seed=2)
    sil = maps[split.train][:, :, ::-1].copy()
    runs = {
        strategy: ro.fit_readouts(
            maps,
            targets,
            ["a", "b", "c"],
            split,
            silhouette_maps=sil,
            config=config,
            seed=7,
            strategy=strategy,
        )
        for strategy in ("eager", "graph")
    }
    eager, graph = runs["eager"], runs["graph"]
    np.testing.assert_array_equal(eager.best_epoch, graph.best_epoch)
    for name in ("mu", "w", "b"):
        np.testing.assert_allclose(getattr(graph, name), getattr(eager, name), rtol=0, atol=1e-6)
    assert (eager.best_epoch > 0).any()  # training moved beyond the start
    with pytest.raises(ValueError, match="strategy"):
        ro.fit_readouts(maps, targets, ["a", "b", "c"], split, config=config, strategy="fast")


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


@pytest.mark.slow
def test_planted_readouts_are_recovered_at_the_papers_settings():
    """Three channels each read 6 of 64 features at one cell, 10% noise, spike-rate targets:
    the fit at the paper's settings (lr 1e-4, 2500 epochs, penalty 0.1, best validation
    epoch) comes within 5% of least squares at the true cell, with the planted ``w``."""
    from stimloop.science import synthetic as sy

    rng = np.random.default_rng(0)
    maps = rng.gamma(2.0, 1.0, (475, 64, 7, 7)).astype(np.float32)
    planted = sy.plant_readouts(maps, channels=3, support=6, noise=0.1, seed=0)
    config = ro.ReadoutConfig(silhouettes=False)
    assert (config.lr, config.epochs, config.l_half_weight) == (1e-4, 2500, 0.1)
    split = ro.make_split(len(maps), config.split, seed=0)
    fit = ro.fit_readouts(maps, planted.targets, ["a", "b", "c"], split, config=config, seed=0)
    rec = sy.recovery(
        fit.mu, fit.w, fit.predict(maps[split.test]), planted, maps, split.train, split.test
    )
    assert (rec["location_cells"] < 0.5).all(), rec
    assert (rec["r_ratio"] >= 0.95).all(), rec
    assert (rec["cosine"] >= 0.9).all(), rec
    # w is in spikes/s per feature unit, at the planted scale (not crushed towards zero)
    ratio = np.linalg.norm(fit.w, axis=1) / np.linalg.norm(planted.w, axis=1)
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_least_squares_reference_recovers_noise_free_truth():
    from stimloop.science import synthetic as sy

    rng = np.random.default_rng(1)
    maps = rng.gamma(2.0, 1.0, (120, 16, 7, 7)).astype(np.float32)
    planted = sy.plant_readouts(maps, channels=2, support=4, noise=0.0, seed=1)
    w, b = sy.least_squares_at(maps, planted.mu, planted.targets, np.arange(120))
    np.testing.assert_allclose(w, planted.w, atol=1e-6)
    np.testing.assert_allclose(b, planted.b, atol=1e-6)
    test = np.arange(100, 120)
    rec = sy.recovery(
        planted.mu, -planted.w, -planted.clean[test], planted, maps, np.arange(100), test
    )
    np.testing.assert_allclose(rec["cosine"], -1, atol=1e-9)  # the fitted w, against the truth
    np.testing.assert_allclose(rec["cosine_least_squares"], 1, atol=1e-6)
    np.testing.assert_allclose(rec["location_cells"], 0)
    assert ((planted.w != 0).sum(1) == 4).all()
    np.testing.assert_allclose(planted.clean.std(0), 10.0, rtol=1e-6)


def test_ridge_start_is_the_closed_form_ridge_at_the_best_cell():
    """grid_init's dual-form solution equals the primal ridge normal equations."""
    maps, targets, mu = small_problem(channels=2, n=80, f=12, seed=4)
    x = torch.as_tensor(maps).flatten(2).transpose(1, 2)
    start = ro.grid_init(x, torch.as_tensor(targets), 7)
    for c in range(2):
        col = round((start.mu[c, 0].item() + 1) * 3)
        row = round((start.mu[c, 1].item() + 1) * 3)
        a = maps[:, :, row, col].astype(np.float64)
        ac = a - a.mean(0)
        yc = targets[:, c] - targets[:, c].mean()
        w = np.linalg.solve(ac.T @ ac + start.ridge[c].item() * np.eye(12), ac.T @ yc)
        np.testing.assert_allclose(start.w[c].numpy(), w, rtol=1e-3, atol=1e-4)
        b = targets[:, c].mean() - a.mean(0) @ w
        assert start.b[c].item() == pytest.approx(b, rel=1e-4, abs=1e-3)
    np.testing.assert_allclose(start.mu.numpy(), mu, atol=1e-6)  # the planted cells


def test_the_start_lattice_finds_a_location_between_cell_centres():
    """A readout planted half a cell from the centres: a lattice with two points per cell
    spacing starts exactly there (and its ridge solution is the one read out there), the
    centres alone start a half cell off."""
    rng = np.random.default_rng(2)
    maps = rng.gamma(2.0, 1.0, (150, 12, 7, 7)).astype(np.float32)
    mu = np.array([[1 / 6, -1 / 2]], np.float32)  # half-way between centres in x and in y
    a = ro.readout_features(torch.as_tensor(maps), torch.as_tensor(mu))[:, 0].numpy()
    w = np.zeros(12)
    w[[1, 4, 7]] = [3.0, -2.0, 1.5]
    y = torch.as_tensor(a @ w + 5.0)[:, None]
    x = torch.as_tensor(maps).flatten(2).transpose(1, 2)
    fine = ro.grid_init(x, y, 7, subdivide=2)
    np.testing.assert_allclose(fine.mu.numpy(), mu, atol=1e-6)
    ac = a.astype(np.float64) - a.mean(0)
    expected = np.linalg.solve(
        ac.T @ ac + fine.ridge[0].item() * np.eye(12), ac.T @ (y[:, 0].numpy() - 5.0)
    )
    np.testing.assert_allclose(fine.w[0].numpy(), expected, rtol=1e-3, atol=1e-4)
    coarse = ro.grid_init(x, y, 7, subdivide=1)
    off = np.abs(coarse.mu.numpy() - mu).max() * 3  # in cells
    assert off == pytest.approx(0.5, abs=1e-6)

"""Sanity checks of the maps: similarities by hand, the cascade, parallel backpropagation
passing and the edge detector (the negative control) failing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from stimloop.science import sanity as sn
from stimloop.science.backbone import FeatureExtractor, image_to_tensor, random_resnet50
from stimloop.science.saliency import SaliencyConfig, parallel_backprop
from stimloop.science.stimuli import generate_bodies, generate_objects

SIZE, HW = 112, (4, 4)


def small_backbone(seed: int = 0) -> FeatureExtractor:
    """A ResNet of basic blocks (layers 1, 1, 1, 2) cut after layer4[1]: [m, 512, 4, 4]."""
    torch.manual_seed(seed)
    net = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 2])
    return FeatureExtractor(net)


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    obj = generate_objects(1, seed=3)[0].image
    body = generate_bodies(1, seed=4)[0].image
    return image_to_tensor(Image.fromarray(obj), SIZE), image_to_tensor(Image.fromarray(body), SIZE)


def ranks_r(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman r by hand: Pearson r of the ranks (no ties in continuous maps)."""
    ra, rb = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_similarities_of_equal_unrelated_and_flat_maps():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 32, 32)), rng.normal(size=(3, 32, 32))
    same = sn.similarity(a, a)
    assert same.spearman_abs == pytest.approx(1) and same.ssim == pytest.approx(1)
    assert same.spearman == pytest.approx(1) and same.hog == pytest.approx(1)
    other = sn.similarity(a, b)
    assert other.spearman_abs == pytest.approx(ranks_r(sn.magnitude(a), sn.magnitude(b)))
    assert other.spearman == pytest.approx(ranks_r(a.sum(0), b.sum(0)))
    assert abs(other.spearman_abs) < 0.2 and other.ssim < 0.3
    flat = sn.similarity(a, np.zeros_like(a))  # a randomised map that vanished has changed
    assert flat.spearman_abs == 0 and flat.spearman == 0


@pytest.mark.backbone
def test_the_cascade_runs_from_the_top_of_resnet50_down_to_the_stem():
    names = [n for n, _ in sn.cascade_blocks(FeatureExtractor(random_resnet50(0)))]
    assert names == ["layer4.1", "layer4.0", "layer3", "layer2", "layer1", "stem"]


def test_reinitialising_is_seeded_and_leaves_other_blocks_alone():
    a, b = small_backbone(), small_backbone()
    blocks_a, blocks_b = dict(sn.cascade_blocks(a)), dict(sn.cascade_blocks(b))
    before = blocks_a["layer3"].state_dict()["0.conv1.weight"].clone()
    sn.reinitialise(blocks_a["layer4.1"], 7)
    sn.reinitialise(blocks_b["layer4.1"], 7)
    assert torch.equal(a.trunk[-1][1].conv1.weight, b.trunk[-1][1].conv1.weight)
    assert not torch.equal(a.trunk[-1][1].conv1.weight, small_backbone().trunk[-1][1].conv1.weight)
    assert torch.equal(blocks_a["layer3"].state_dict()["0.conv1.weight"], before)


def test_parallel_backprop_passes_and_the_edge_detector_fails():
    backbone = small_backbone()
    x_out, x_in = pair()
    rng = np.random.default_rng(1)
    w = np.abs(rng.standard_t(2, 512)).astype(np.float32) * (rng.random(512) < 0.2)
    mu = (0.1, -0.2)
    cfg = SaliencyConfig(coverage=0.9, sigma=2.0, max_features=12)

    def pb(net, mu_, w_):
        r = parallel_backprop(net, x_out, x_in, mu_, w_, cfg, map_hw=HW)
        return r.map_out, r.map_in

    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    refit = ((-0.5, 0.6), np.abs(rng.normal(size=512)).astype(np.float32))
    images = torch.stack([x_out, x_in])
    seen = []
    result = sn.sanity_checks(
        backbone, pb, mu, w, images, refit=refit, progress=lambda d, t, n: seen.append((d, t, n))
    )
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert [s.name for s in result.model_steps] == [
        "readout", "layer4.1", "layer4.0", "layer3", "layer2", "layer1", "stem",
    ]  # fmt: skip
    assert seen[-1] == (9, 9, "labels permuted")
    for s in [*result.model_steps, result.data_step]:
        for sim in (s.out, s.in_):
            assert all(np.isfinite(v) for v in vars(sim).values()), s.name
    assert result.model_passed and result.data_passed and result.passed
    assert all(np.isfinite(m).all() for pair_ in result.maps.values() for m in pair_)

    control = sn.sanity_checks(backbone, sn.EdgeDetector(x_out, x_in), mu, w, images, refit=refit)
    assert not control.model_passed and not control.data_passed and not control.passed
    for metric in ("spearman_abs", "spearman", "ssim", "hog"):
        assert control.model_steps[-1].worst(metric) == pytest.approx(1.0)
    summary = control.summary()
    assert summary["model_similarity"] == pytest.approx(1.0) and summary["passed"] is False


def test_the_threshold_decides_the_verdict():
    backbone = small_backbone()
    x_out, x_in = pair()
    edges = sn.EdgeDetector(x_out, x_in)
    images = torch.stack([x_out, x_in])
    w = np.ones(512, np.float32)
    loose = sn.sanity_checks(
        backbone, edges, (0, 0), w, images, config=sn.SanityConfig(max_similarity=1.0)
    )
    assert not loose.model_passed  # 1.0 is not below 1.0
    assert loose.data_passed is None and loose.passed is False
    with pytest.raises(ValueError):
        sn.SanityConfig(max_similarity=2)


def parameters_seed(net, mu, w) -> int:
    """A seed from everything the model check randomises (backbone, readout ``w`` and ``mu``)."""
    total = sum(float(p.double().sum()) for p in net.parameters())
    digest = hash((round(total, 6), tuple(np.round(np.asarray(mu, float), 6)), w.tobytes()))
    return digest % 2**32


class HashedSigns:
    """A map that ignores the model: a fixed envelope at the image's centre whose sign pattern
    is drawn from a seed hashed from the parameters. Its sign changes with the model; the
    image a person sees (|map|) never does."""

    def __call__(self, net, mu, w):
        yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
        envelope = np.exp(-(xx**2 + yy**2) / (2 * 20.0**2))
        rng = np.random.default_rng(parameters_seed(net, mu, w))
        pair_ = [envelope * rng.choice([-1.0, 1.0], (SIZE, SIZE)) for _ in range(2)]
        return tuple(np.repeat(m[None], 3, 0).astype(np.float32) for m in pair_)


class RedrawnSign:
    """The original model's magnitude with a sign re-drawn from the parameters: |map| is the
    real method's on the original model, whatever the model now is."""

    def __init__(self, magnitudes):
        self.magnitudes = magnitudes

    def __call__(self, net, mu, w):
        rng = np.random.default_rng(parameters_seed(net, mu, w))
        return tuple(
            (m * rng.choice([-1.0, 1.0], m.shape)).astype(np.float32) for m in self.magnitudes
        )


def test_maps_that_ignore_the_model_fail_the_default_verdict():
    """Both constructed maps pass a verdict by the signed rank alone (the old default) and fail
    the default, which is split: the sign moves, where the map looks does not."""
    backbone = small_backbone()
    x_out, x_in = pair()
    images = torch.stack([x_out, x_in])
    w = np.abs(np.random.default_rng(2).normal(size=512)).astype(np.float32)
    mu = (0.1, -0.2)
    cfg = SaliencyConfig(coverage=0.9, sigma=2.0, max_features=12)
    real = parallel_backprop(backbone, x_out, x_in, mu, w, cfg, map_hw=HW)
    for fake in (HashedSigns(), RedrawnSign((real.map_out, real.map_in))):
        signed_only = sn.sanity_checks(
            backbone, fake, mu, w, images, config=sn.SanityConfig(metric="spearman")
        )
        assert signed_only.model_passed  # what the field's split warns of
        result = sn.sanity_checks(backbone, fake, mu, w, images)
        assert not result.model_passed and not result.passed, type(fake).__name__
        assert result.model_failed_on == ["spearman_abs"]
        assert result.model_verdict.startswith("split: the sign depends on the model")
        last = result.model_steps[-1]
        assert last.out.spearman_abs == pytest.approx(1.0) and last.out.ssim == pytest.approx(1)
        assert result.summary()["model_verdict"] == result.model_verdict


def test_the_readout_location_is_part_of_the_cascade():
    backbone = small_backbone()
    x_out, x_in = pair()
    seen = []

    def record(net, mu, w):
        seen.append(tuple(np.asarray(mu, float)))
        return sn.EdgeDetector(x_out, x_in)(net, mu, w)

    sn.sanity_checks(backbone, record, (0.1, -0.2), np.ones(512, np.float32), torch.stack(pair()))
    assert seen[0] == (0.1, -0.2)
    assert all(mu != (0.1, -0.2) and all(-1 <= v <= 1 for v in mu) for mu in seen[1:])
    assert len(set(seen[1:])) == 1  # one re-drawn location for the whole cascade


def top_activations(all_so_far: bool) -> torch.Tensor:
    """The pair's activations after the top block's last BatchNorm ``[C, m*h*w]``, after the
    whole cascade, recalibrating every re-initialised block so far (or only the newest)."""
    backbone = small_backbone()
    images = torch.stack(pair())
    blocks = [b for _, b in sn.cascade_blocks(backbone)]
    for k, block in enumerate(blocks):
        sn.reinitialise(block, 10 + k)
        sn.recalibrate(backbone, blocks[: k + 1] if all_so_far else [block], images)
    top_norm = backbone.trunk[-1][1].bn2
    seen = {}

    def keep(module, inputs, output) -> None:  # returns None: the output is not replaced
        seen["y"] = output.detach().clone()

    handle = top_norm.register_forward_hook(keep)
    with torch.no_grad():
        backbone(images)
    handle.remove()
    return seen["y"].transpose(0, 1).reshape(top_norm.num_features, -1).double()


def test_every_reinitialised_block_is_recalibrated_on_what_it_now_gets():
    """After the whole cascade, the last BatchNorm of the top block normalises the pair's own
    activations (mean near 0, variance near 1 per channel: the evaluation's unbiased variance
    makes it inexact), although every block below it was re-initialised after it; recalibrated
    only when it was re-initialised, it is orders of magnitude off."""
    y = top_activations(all_so_far=True)
    assert y.mean(1).abs().max() < 0.25 and (y.var(1, unbiased=False) - 1).abs().max() < 0.5
    stale = top_activations(all_so_far=False)
    assert stale.var(1, unbiased=False).max() > 100 or stale.mean(1).abs().max() > 10


def test_emprts_complexity_is_the_entropy_of_the_histogram():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(3, 16, 16))
    counts, _ = np.histogram(m.sum(0).ravel(), bins=100)
    p = [c / counts.sum() for c in counts if c > 0]
    by_hand = -sum(q * np.log(q) for q in p)
    assert sn.complexity(m) == pytest.approx(by_hand)
    flat = np.zeros((3, 16, 16))
    flat[0, :8] = 1.0  # two values: ln 2
    assert sn.complexity(flat) == pytest.approx(np.log(2))
    assert sn.complexity_rise(flat, m) == pytest.approx((by_hand - np.log(2)) / np.log(2))
    assert np.isnan(sn.complexity_rise(np.zeros((3, 4, 4)), m))

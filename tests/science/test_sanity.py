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

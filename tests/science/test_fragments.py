"""Fragments: stated areas, feathered edges, inside the foreground, reproducible, and the
salient region where the map is high."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from stimloop.science.fragments import (
    FragmentConfig,
    contiguous_mask,
    fragment_id,
    kept_pixels,
    make_fragments,
    ranked_mask,
    resize_map,
)
from stimloop.science.images import foreground_mask
from stimloop.science.stimuli import BACKGROUND, generate_bodies, generate_objects


@pytest.fixture(scope="module")
def images():
    return [s.image for s in generate_bodies(2, seed=4) + generate_objects(2, seed=4)]


def a_map(shape=(224, 224), seed=0):
    """A smooth positive map with a peak somewhere."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 6).astype(np.float32)


@pytest.mark.parametrize("q", [0.1, 0.25, 0.5, 0.9])
def test_masks_have_the_stated_area_inside_the_foreground(images, q):
    for n, image in enumerate(images):
        fg = foreground_mask(image)
        frags = make_fragments(image, a_map(seed=n), f"img{n}", "ch1", FragmentConfig(q))
        assert [f.kind for f in frags] == ["salient", "complement", "random"]
        for f in frags:
            assert f.area == f.mask.sum() == round(q * fg.sum())  # k = round(q |F|)
            assert abs(f.area - q * f.foreground_area) <= 0.5
            assert not (f.mask & ~fg).any()  # kept pixels are foreground pixels
            assert not (f.alpha[~fg] > 0).any()  # the feathered edge too
            # outside the foreground the fragment is the background
            assert (f.image[~fg] == np.array(BACKGROUND, np.uint8)).all()


def test_salient_and_complement_split_the_foreground_by_the_map(images):
    image = images[0]
    fg = foreground_mask(image)
    display = a_map(seed=9)
    big = resize_map(display, fg.shape)
    sal, comp, _ = make_fragments(image, display, "b", "ch1", FragmentConfig(0.3))
    # every kept salient pixel is at least as salient as every foreground pixel left out
    assert big[sal.mask].min() >= big[fg & ~sal.mask].max()
    assert big[comp.mask].max() <= big[fg & ~comp.mask].min()
    assert not (sal.mask & comp.mask).any()  # q < 0.5: disjoint


def test_the_random_region_is_one_connected_piece_and_seeded(images):
    image = images[2]
    a = make_fragments(image, a_map(), "o", "ch1", FragmentConfig(0.25), ("random",), seed=3)[0]
    b = make_fragments(image, a_map(), "o", "ch1", FragmentConfig(0.25), ("random",), seed=3)[0]
    c = make_fragments(image, a_map(), "o", "ch1", FragmentConfig(0.25), ("random",), seed=4)[0]
    assert (a.mask == b.mask).all() and (a.image == b.image).all()
    assert not (a.mask == c.mask).all()
    _, pieces = ndimage.label(a.mask)
    assert pieces == 1
    assert (a.seed, a.stream) == (3, "fragment:o:0.25")


def test_contiguous_mask_by_hand():
    fg = np.zeros((5, 7), bool)
    fg[1:4, 1:6] = True  # a 3 x 5 block of 15 pixels
    fg[0, 0] = True  # a lone pixel: never a start for k > 1
    for seed in range(20):
        mask = contiguous_mask(fg, 4, np.random.default_rng(seed))
        assert mask.sum() == 4 and not mask[0, 0] and ndimage.label(mask)[1] == 1
    with pytest.raises(ValueError, match="no connected piece"):
        contiguous_mask(fg, 16, np.random.default_rng(0))


def test_ranked_mask_ties_by_raster_order():
    fg = np.ones((2, 3), bool)
    display = np.array([[1.0, 2.0, 2.0], [0.0, 2.0, 1.0]])
    assert ranked_mask(display, fg, 2, most=True).tolist() == [
        [False, True, True],
        [False, False, False],
    ]
    assert ranked_mask(display, fg, 2, most=False).tolist() == [
        [True, False, False],
        [True, False, False],
    ]


def test_edges_are_feathered(images):
    image = images[1]
    fg = foreground_mask(image)
    soft = make_fragments(image, a_map(), "b", "c", FragmentConfig(0.25, feather=2.0))[2]
    hard = make_fragments(image, a_map(), "b", "c", FragmentConfig(0.25, feather=0.0))[2]
    assert set(np.unique(hard.alpha)) <= {0.0, 1.0}
    edge = ndimage.binary_dilation(soft.mask) & ~ndimage.binary_erosion(soft.mask)
    partial = (soft.alpha > 0.02) & (soft.alpha < 0.98)
    assert partial.sum() > 0.5 * (edge & fg).sum()  # a soft ramp along the region's edge
    inner = ndimage.binary_erosion(soft.mask, iterations=8)
    if inner.any():
        assert soft.alpha[inner].min() > 0.98  # deep inside, the image itself
    far = ~ndimage.binary_dilation(soft.mask, iterations=8)
    assert soft.alpha[far].max() < 0.02


def test_ids_name_source_channel_kind_and_q():
    assert fragment_id("body_0003", "ch07", "salient", 0.25) == "body_0003__ch07__salient__q0.25"


def test_bad_settings_are_refused(images):
    for q in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"q must be (greater than 0|less than 1)"):
            FragmentConfig(q)
    with pytest.raises(ValueError, match="unknown fragment kinds"):
        make_fragments(images[0], a_map(), "b", "c", kinds=("middle",))
    with pytest.raises(ValueError, match="no foreground"):
        kept_pixels(np.zeros((4, 4), bool), 0.5)

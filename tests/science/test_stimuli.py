"""Procedural stimuli: deterministic per seed, gray borders, the three categories, silhouettes."""

from __future__ import annotations

import numpy as np
import pytest
from stimloop.science import stimuli as st
from stimloop.science.images import foreground_mask


def every_category(seed: int) -> list[bytes]:
    drawn = (
        st.generate_bodies(6, seed)
        + st.generate_objects(5, seed)
        + st.generate_control_bodies(4, seed)
        + st.generate_faces(4, seed)
        + st.generate_faces(3, seed, "control_face")
    )
    return [s.png() for s in drawn]


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = every_category(3), every_category(3), every_category(4)
    assert a == b
    assert all(x != y for x, y in zip(a, c))


def test_an_image_does_not_depend_on_the_set_size():
    small = st.generate_objects(3, seed=1)
    large = st.generate_objects(8, seed=1)
    assert all(np.array_equal(s.image, t.image) for s, t in zip(small, large))
    assert np.array_equal(st.generate_bodies(5, 1)[2].image, st.generate_bodies(50, 1)[2].image)


@pytest.mark.parametrize(
    "maker", [st.generate_bodies, st.generate_objects, st.generate_control_bodies]
)
def test_shape_gray_border_and_a_foreground(maker):
    for stim in maker(10, seed=0):
        image = stim.image
        assert image.shape == (280, 280, 3) and image.dtype == np.uint8
        frame = np.concatenate(
            [
                image[:20].reshape(-1, 3),
                image[-20:].reshape(-1, 3),
                image[:, :20].reshape(-1, 3),
                image[:, -20:].reshape(-1, 3),
            ]
        )
        assert (frame == 128).all(), stim.id
        assert foreground_mask(image).sum() > 500, stim.id


def test_categories_ids_and_kinds():
    stimuli = (
        st.generate_bodies(3, 0) + st.generate_objects(5, 0) + st.generate_control_bodies(4, 0)
    )
    assert [s.category for s in stimuli] == ["body"] * 3 + ["object"] * 5 + ["control_body"] * 4
    assert stimuli[0].id == "body_0000" and stimuli[3].id == "object_0000"
    assert {s.params["kind"] for s in stimuli[3:8]} == set(st.OBJECT_KINDS)
    assert {s.params["kind"] for s in stimuli[8:]} == set(st.CONTROL_KINDS)


def test_bodies_cover_poses_and_views_without_repeats():
    bodies = st.generate_bodies(720, seed=0)
    combos = {(b.params["pose"], b.params["view"]) for b in bodies}
    assert len(combos) == 720
    assert {b.params["behaviour"] for b in bodies} == set(st.BEHAVIOURS)
    with pytest.raises(ValueError, match="at most 720"):
        st.generate_bodies(721, seed=0)


def test_views_of_one_pose_differ():
    a, _ = st.draw_body(0, pose=7, view=0)
    b, _ = st.draw_body(0, pose=7, view=4)
    assert not np.array_equal(a, b)

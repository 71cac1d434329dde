"""Image helpers on any stimulus (``science/images.py``): background, foreground, silhouette."""

from __future__ import annotations

import numpy as np
from stimloop.science.images import border_color, foreground_mask, silhouette
from stimloop.science.stimuli import generate_bodies


def test_silhouette_is_flat_dark_foreground_on_gray():
    body = generate_bodies(1, seed=0)[0].image
    sil = silhouette(body)
    mask = foreground_mask(body)
    assert (sil[mask] == 40).all() and (sil[~mask] == 128).all()
    assert border_color(body) == (128, 128, 128)


def test_silhouette_uses_the_images_own_background():
    image = np.full((50, 50, 3), 200, dtype=np.uint8)
    image[20:30, 20:30] = (10, 200, 10)
    sil = silhouette(image)
    assert (sil[0, 0] == 200).all() and (sil[25, 25] == 40).all()

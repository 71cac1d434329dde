"""The candidates' cell-major cache (``science.candidate_cells``)."""

from __future__ import annotations

import numpy as np
from stimloop.science.candidate_cells import cell_major, maps_of_cells


def test_cell_major_maps_go_back_to_maps():
    """The calibration images' maps come from the candidates' cell-major cache: ``[M, F, H, W]``
    to ``[H*W, M, F]`` and back, on a map that is not square."""
    maps = np.random.default_rng(0).normal(size=(4, 5, 2, 3)).astype(np.float32)
    cells = cell_major(maps)
    assert tuple(cells.shape) == (6, 4, 5)
    np.testing.assert_array_equal(cells[1 * 3 + 2].numpy(), maps[:, :, 1, 2])  # cell (1, 2)
    np.testing.assert_array_equal(maps_of_cells(cells, 2, 3).numpy(), maps)

"""Selection: argmax/argmin of independently computed predictions, the list, the sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stimloop.science import selection as sel
from stimloop.science.candidate_cells import cell_major
from stimloop.science.readout import FittedReadout, ReadoutConfig, readout_features
from stimloop.science.responses import ChannelInclusion
from stimloop.science.similarity import similarity


def make_readout(channels, f=24, seed=0):
    rng = np.random.default_rng(seed)
    c = len(channels)
    return FittedReadout(
        channels=list(channels),
        mu=rng.uniform(-1, 1, (c, 2)),
        w=rng.normal(size=(c, f)),
        b=rng.normal(size=c),
        best_epoch=np.zeros(c, int),
        loss={},
        r={},
        p={},
        split_ids={},
        config=ReadoutConfig(),
        seed=0,
        weights_sha256="x",
        map_shape=(f, 7, 7),
    )


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    f = 24
    body_ids = [f"body_{i:03d}" for i in range(120)]
    body_maps = rng.gamma(2, 1, (120, f, 7, 7)).astype(np.float32)
    objects = [f"object_{i:03d}" for i in range(40)]
    object_maps = rng.gamma(2, 1, (40, f, 7, 7)).astype(np.float32)
    controls = [f"control_body_{i:03d}" for i in range(15)]
    control_maps = rng.gamma(2, 1, (15, f, 7, 7)).astype(np.float32)
    channels = ["c1", "c2", "c3", "c4"]
    inclusion = [
        ChannelInclusion(c, (), c != "c3", "" if c != "c3" else "not reliable: ...")
        for c in channels
    ]
    readout = make_readout(["c1", "c2", "c4"], f)
    means = rng.normal(20, 5, (4, 120))
    cands = [
        sel.Candidates("object", objects, cell_major(object_maps)),
        sel.Candidates("control_body", controls, cell_major(control_maps)),
    ]
    return dict(
        body_ids=body_ids,
        body_maps=body_maps,
        objects=objects,
        object_maps=object_maps,
        controls=controls,
        control_maps=control_maps,
        inclusion=inclusion,
        readout=readout,
        means=means,
        cands=cands,
    )


def test_scores_equal_direct_readout_and_eq2(problem):
    p, fit = problem, problem["readout"]
    a_ref = np.random.default_rng(0).gamma(2, 1, (3, 24))
    scores = sel.score_candidates(p["cands"][0].cells, fit.mu, fit.w, fit.b, a_ref)
    a = readout_features(torch.as_tensor(p["object_maps"]), torch.as_tensor(fit.mu)).numpy()
    np.testing.assert_allclose(scores.predicted, (a * fit.w).sum(-1) + fit.b, rtol=1e-4, atol=1e-4)
    for n in range(0, 40, 7):
        for c in range(3):
            assert scores.similarity[n, c] == pytest.approx(
                similarity(a_ref[c], a[n, c], fit.w[c]), abs=1e-5
            )


def direct_predictions(p):
    """Per candidate category: its ids, read-out features ``[M, C, F]`` and predictions
    ``[M, C]``, computed directly from the readout (eq. 1 plus bias)."""
    fit = p["readout"]
    for category, ids, maps in (
        ("object", p["objects"], p["object_maps"]),
        ("control_body", p["controls"], p["control_maps"]),
    ):
        a = readout_features(torch.as_tensor(maps), torch.as_tensor(fit.mu)).numpy()
        yield category, ids, a, (a * fit.w).sum(-1) + fit.b


def test_selection_equals_argmax_argmin_and_most_similar(problem):
    p = problem
    result = sel.select(
        p["readout"], p["inclusion"], p["body_ids"], p["means"], p["body_maps"], p["cands"], seed=4
    )
    by_channel = {c.channel: c for c in result.channels}
    fit = p["readout"]
    for category, ids, a, pred in direct_predictions(p):
        for j, channel in enumerate(fit.channels):
            row = [v.channel for v in p["inclusion"]].index(channel)
            best_body = int(np.argmax(p["means"][row]))
            a_ref = readout_features(
                torch.as_tensor(p["body_maps"][[best_body]]), torch.as_tensor(fit.mu[[j]])
            )[0, 0].numpy()
            sims = [similarity(a_ref, a[n, j], fit.w[j]) for n in range(len(ids))]
            picks = {
                k.role: k.stimulus for k in by_channel[channel].picks if k.category == category
            }
            assert picks == {
                "top": ids[int(np.argmax(pred[:, j]))],
                "bottom": ids[int(np.argmin(pred[:, j]))],
                "similar": ids[int(np.argmax(sims))],
            }
            assert by_channel[channel].reference == p["body_ids"][best_body]
    assert not by_channel["c3"].included and by_channel["c3"].picks == []
    assert "not reliable" in by_channel["c3"].reason


def test_calibration_images_are_never_picked(problem):
    """Phase one showed them: the picks are the best of the others (the argmax test above,
    with every channel's first choices held out)."""
    p = problem
    first = sel.select(
        p["readout"], p["inclusion"], p["body_ids"], p["means"], p["body_maps"], p["cands"], seed=4
    )
    held = frozenset(k.stimulus for c in first.channels for k in c.picks)
    inputs = ("readout", "inclusion", "body_ids", "means", "body_maps", "cands")
    again = sel.select(*(p[k] for k in inputs), seed=4, held=held)
    for category, ids, _, pred in direct_predictions(p):
        free = [n for n, i in enumerate(ids) if i not in held]
        for j, channel in enumerate(p["readout"].channels):
            mine = next(c for c in again.channels if c.channel == channel)
            top = next(k for k in mine.picks if k.category == category and k.role == "top")
            assert top.stimulus == ids[free[int(np.argmax(pred[free, j]))]]
    picked = {k.stimulus for c in again.channels for k in c.picks}
    assert picked and not picked & held


def test_phase_two_list_holds_each_image_once_with_all_reasons(problem):
    p = problem
    result = sel.select(
        p["readout"], p["inclusion"], p["body_ids"], p["means"], p["body_maps"], p["cands"], seed=4
    )
    picks = [(c.channel, k) for c in result.channels for k in c.picks]
    stimuli = [e.stimulus for e in result.phase_two.entries]
    assert sorted(stimuli) == sorted({k.stimulus for _, k in picks})
    assert len(stimuli) == len(set(stimuli))
    for entry in result.phase_two.entries:
        expected = sorted((ch, k.role) for ch, k in picks if k.stimulus == entry.stimulus)
        assert sorted((r.channel, r.role) for r in entry.reasons) == expected
    assert len(result.phase_two.stability_images) == 75
    assert len(set(result.phase_two.stability_images)) == 75
    assert len(result.phase_two.stimuli) == len(stimuli) + 75
    again = sel.select(
        p["readout"], p["inclusion"], p["body_ids"], p["means"], p["body_maps"], p["cands"], seed=4
    )
    assert again.to_dict() == result.to_dict()
    assert sel.selection_from_dict(result.to_dict()).to_dict() == result.to_dict()
    other = sel.select(
        p["readout"], p["inclusion"], p["body_ids"], p["means"], p["body_maps"], p["cands"], seed=5
    )
    assert other.phase_two.stability_images != result.phase_two.stability_images


def test_stability_images_spread_over_the_response_range():
    ids = [f"b{i:03d}" for i in range(300)]
    responses = np.arange(300.0)[None]
    chosen = sel.stability_images(ids, responses, 75, seed=0)
    ranks = sorted(int(c[1:]) for c in chosen)
    for k, r in enumerate(ranks):  # exactly one per stratum of 4
        assert 4 * k <= r < 4 * (k + 1)
    assert sel.stability_images(ids[:50], responses[:, :50], 75, 0) == sorted(ids[:50])


def test_ties_are_broken_by_stimulus_id():
    values = np.array([3.0, 5.0, 5.0, 1.0, 1.0])
    ids = ["e", "d", "b", "c", "a"]
    assert [ids[i] for i in sel.ranked(values, ids, descending=True)][:2] == ["b", "d"]
    assert [ids[i] for i in sel.ranked(values, ids, descending=False)][:2] == ["a", "c"]


def test_an_image_chosen_for_two_roles_keeps_both(problem):
    p = problem
    tiny = [sel.Candidates("object", p["objects"][:1], cell_major(p["object_maps"][:1]))]
    result = sel.select(
        p["readout"], p["inclusion"], p["body_ids"], p["means"], p["body_maps"], tiny, seed=0
    )
    [entry] = result.phase_two.entries
    assert {r.role for r in entry.reasons} == {"top", "bottom", "similar"}
    assert len(entry.reasons) == 9  # 3 included channels x 3 roles


def test_all_channels_excluded_gives_an_empty_selection_with_reasons(problem):
    p = problem
    excluded = [ChannelInclusion(c, (), False, f"{c} failed") for c in ["c1", "c2", "c3", "c4"]]
    result = sel.select(
        p["readout"], excluded, p["body_ids"], p["means"], p["body_maps"], p["cands"], seed=0
    )
    assert result.phase_two.entries == []
    assert [c.reason for c in result.channels] == [f"{c} failed" for c in ["c1", "c2", "c3", "c4"]]
    assert len(result.phase_two.stability_images) == 75


def test_too_small_candidate_set_is_a_clear_error(problem):
    p = problem
    with pytest.raises(ValueError, match="has 15 candidates, fewer than the 20"):
        sel.select(
            p["readout"],
            p["inclusion"],
            p["body_ids"],
            p["means"],
            p["body_maps"],
            p["cands"],
            config=sel.SelectionConfig(n_top=20),
        )


def test_presentation_sequence():
    stimuli = [f"s{i}" for i in range(6)]
    seq = sel.presentation_sequence(stimuli, 8, seed=1)
    assert len(seq) == 48 and all(seq.count(s) == 8 for s in stimuli)
    assert all(a != b for a, b in zip(seq, seq[1:]))
    assert seq == sel.presentation_sequence(stimuli, 8, seed=1)
    assert seq != sel.presentation_sequence(stimuli, 8, seed=2)
    two = sel.presentation_sequence(["x", "y"], 50, seed=0)
    assert all(a != b for a, b in zip(two, two[1:]))
    with pytest.raises(ValueError):
        sel.presentation_sequence(["x"], 2, seed=0)


def test_graded_levels_are_the_candidates_nearest_evenly_spaced_predictions():
    pred = np.array([0.0, 1.0, 1.1, 4.9, 5.0, 7.4, 10.0, 2.6])
    ids = [f"c{i}" for i in range(len(pred))]
    picks = sel.graded_order(pred, ids, 5)  # targets 0, 2.5, 5, 7.5, 10
    assert [ids[i] for i, _ in picks] == ["c0", "c7", "c4", "c5", "c6"]
    np.testing.assert_allclose([t for _, t in picks], np.linspace(0, 10, 5))
    # a candidate serves one level: with more levels than distinct neighbours, the next nearest
    crowded = sel.graded_order(np.array([0.0, 0.0, 10.0]), ["b", "a", "c"], 3)
    assert [i for i, _ in crowded] == [1, 0, 2]  # level 1: "a" (tie by id), level 2: "b"


def test_the_confident_ranking_uses_the_interval_bounds():
    pred = np.array([10.0, 9.0, 1.0, 2.0])
    sd = np.array([8.0, 0.5, 6.0, 0.5])
    ids = ["a", "b", "c", "d"]
    low, high = pred - 1.645 * sd, pred + 1.645 * sd
    sim = np.zeros(4)
    paper = dict(sel.role_orders(sel.SelectionConfig(), ids, pred, sim, low, high))
    assert paper["top"][0][0] == 0 and paper["bottom"][0][0] == 2  # by the prediction
    sure = dict(
        sel.role_orders(sel.SelectionConfig(ranking="confident"), ids, pred, sim, low, high)
    )
    assert sure["top"][0][0] == 1 and sure["bottom"][0][0] == 3  # by the bounds
    with pytest.raises(ValueError, match="needs intervals"):
        sel.role_orders(sel.SelectionConfig(ranking="confident"), ids, pred, sim, None, None)
    graded = dict(
        sel.role_orders(sel.SelectionConfig(mode="graded", levels=3), ids, pred, sim, low, high)
    )
    assert set(graded) == {"level", "similar"} and len(graded["level"]) == 3

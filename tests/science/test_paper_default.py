"""The paper's categories (bodies, objects, control bodies) as the default: a fixed session's
selection and analysis are pinned to the values this code gave before categories became data
(``data/paper_default.json``, in that version's shape; ``in_categories`` renames its fields to
today's), so generalising the shell cannot move the paper's results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stimloop.science import selection as sel
from stimloop.science.analysis import analyse
from stimloop.science.candidate_cells import cell_major
from stimloop.science.readout import FittedReadout, ReadoutConfig
from stimloop.science.responses import ChannelInclusion, response_table, trials_from_rates
from stimloop_contract.configs import AnalysisConfig, SelectionConfig

from tests.support.pinned import in_categories

PINNED = Path(__file__).parent / "data" / "paper_default.json"
F = 32


def fixed_session() -> dict:
    """Random maps, a fixed readout of three of four channels, recorded phases from it."""
    rng = np.random.default_rng(20261201)
    bodies = [f"body_{i:03d}" for i in range(60)]
    objects = [f"object_{i:03d}" for i in range(40)]
    controls = [f"control_body_{i:03d}" for i in range(20)]
    maps = {
        "body": rng.gamma(2, 1, (60, F, 7, 7)).astype(np.float32),
        "object": rng.gamma(2, 1, (40, F, 7, 7)).astype(np.float32),
        "control_body": rng.gamma(2, 1, (20, F, 7, 7)).astype(np.float32),
    }
    fitted = ["c1", "c2", "c4"]
    readout = FittedReadout(
        channels=fitted,
        mu=rng.uniform(-0.8, 0.8, (3, 2)),
        w=rng.normal(size=(3, F)),
        b=rng.normal(20, 2, size=3),
        best_epoch=np.zeros(3, int),
        loss={},
        r={},
        p={},
        split_ids={"test": bodies[-10:]},
        config=ReadoutConfig(),
        seed=0,
        weights_sha256="pinned",
        map_shape=(F, 7, 7),
    )
    inclusion = [
        ChannelInclusion(c, (), c != "c3", "" if c != "c3" else "not reliable")
        for c in ["c1", "c2", "c3", "c4"]
    ]
    truth = {k: readout.predict(v) for k, v in maps.items()}  # [N, 3]
    ids = {"body": bodies, "object": objects, "control_body": controls}

    def record(kinds: list[str], seed: int, repeats: int = 6):
        r = np.random.default_rng(seed)
        stim, chan, rate = [], [], []
        for kind in kinds:
            for n, s in enumerate(ids[kind]):
                for c, channel in enumerate(["c1", "c2", "c3", "c4"]):
                    mean = truth[kind][n, min(c, 2)] + (15.0 if kind != "object" else 0.0)
                    for _ in range(repeats):
                        stim.append(s)
                        chan.append(channel)
                        rate.append(float(mean + r.normal(0, 4)))
        return trials_from_rates(stim, chan, rate)

    return dict(
        ids=ids,
        maps=maps,
        readout=readout,
        inclusion=inclusion,
        phase_one=record(["body"], 1),
        phase_two_all=record(["body", "object", "control_body"], 2),
    )


def run_today(session: dict) -> dict:
    s = session
    t1 = response_table(s["phase_one"], channels=["c1", "c2", "c3", "c4"])
    cands = [
        sel.Candidates(kind, s["ids"][kind], cell_major(s["maps"][kind]))
        for kind in ("object", "control_body")
    ]
    config = SelectionConfig(stability_images=12)
    selection = sel.select(
        s["readout"],
        s["inclusion"],
        s["ids"]["body"],
        t1.means_for(s["ids"]["body"]),
        s["maps"]["body"],
        cands,
        config,
        seed=5,
    )
    listed = set(selection.phase_two.stimuli)
    p2 = s["phase_two_all"]
    keep = np.isin(p2.stimulus, list(listed))
    from stimloop.science.responses import Trials

    t2 = response_table(
        Trials(p2.stimulus[keep], p2.channel[keep], p2.net_rate[keep]),
        channels=["c1", "c2", "c3", "c4"],
    )
    entries = selection.phase_two.entries
    objects = [e.stimulus for e in entries if e.category == "object"]
    controls = [e.stimulus for e in entries if e.category == "control_body"]
    assert controls and objects
    index = {b: i for i, b in enumerate(s["ids"]["object"])}
    obj_pred = s["readout"].predict(s["maps"]["object"][[index[o] for o in objects]])
    bindex = {b: i for i, b in enumerate(s["ids"]["body"])}
    test_pred = s["readout"].predict(
        s["maps"]["body"][[bindex[b] for b in s["readout"].split_ids["test"]]]
    )
    analysis = analyse(
        t1,
        t2,
        s["readout"],
        selection.phase_two.stability_images,
        controls,
        {"object": objects},
        {"object": obj_pred},
        test_pred,
        AnalysisConfig(),
        seed=5,
    )
    return {"selection": selection.to_dict(), "analysis": analysis.to_dict()}


def _close(got, want, path="") -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), (path, sorted(set(got) ^ set(want)))
        for k in want:
            _close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        if want is None or (isinstance(want, float) and np.isnan(want)):
            assert got is None or np.isnan(got), path
        else:
            # float32 products differ in their last bits between CPUs (AMD EPYC, Intel Xeon):
            # predictions near zero are sums of cancelling terms of about 20 spikes/s
            assert got == pytest.approx(want, rel=1e-5, abs=1e-4), path
    else:
        assert got == want, path


def _jsonable(data):
    return json.loads(json.dumps(data, default=lambda v: v.item() if hasattr(v, "item") else v))


ADDED_SUMMARY = (
    "fraction_of_oracle_preferred",
    "fraction_of_oracle",
    "mean_feve_preferred",
    "mean_feve",
    "feve_channels_preferred",
    "feve_channels",
)


def without_fit_metrics(today: dict) -> dict:
    """Today's output less what the fit metrics added since the pin (each generalisation's
    ``metrics``, the summary's oracle fractions and FEVE means, the bootstrap's settings);
    everything the pin holds must be unchanged."""
    analysis = today["analysis"]
    for c in analysis["channels"]:
        c.pop("fit_flag")  # the fit's flag, added with the fit metrics' verdicts
        for g in [c["generalisation_preferred"], *c["generalisation"].values()]:
            if g is not None:
                assert g.pop("metrics") is not None
    for key in ADDED_SUMMARY:
        analysis["summary"].pop(key)
    for key in ("bootstrap", "confidence", "fev_floor"):
        analysis["config"].pop(key)
    # the intervals' additions: the prediction table, each pick's interval (none without an
    # ensemble), and their settings at the paper's values (its ranking and picks)
    selection = today["selection"]
    assert selection.pop("predictions")["channels"] == ["c1", "c2", "c4"]
    for c in selection["channels"]:
        for pick in c["picks"]:
            keys = ("sd", "lower", "upper", "centre", "target")
            assert [pick.pop(k) for k in keys] == [None] * 5
    names = ("mode", "levels", "ranking", "ensemble", "calibration")
    added = {k: selection["config"].pop(k) for k in names}
    assert added["mode"] == "paper" and added["ranking"] == "central"
    assert added["calibration"] == 0  # the paper's phase one: bodies only
    selection["config"].pop("interval")
    return today


def test_the_paper_default_gives_the_pinned_selection_and_analysis():
    got = without_fit_metrics(_jsonable(run_today(fixed_session())))
    want = in_categories(json.loads(PINNED.read_text()))
    _close(got, want)
    # the pinned session is not trivial: picks in both categories, a verdict either way
    assert {p["category"] for c in want["selection"]["channels"] for p in c["picks"]} == {
        "object",
        "control_body",
    }

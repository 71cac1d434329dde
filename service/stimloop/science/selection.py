"""The phase-two list: per channel the top-, bottom-predicted and most-similar candidates.

Sec. 3.2 and 4: for each included channel and each candidate set (one category each: objects
and control bodies in the paper), the highest and the lowest predicted candidate and the
candidate most similar (eq. 2-3) to the reference, the image of the preferred set (a body)
with the highest recorded phase-one response. The phase-two list holds every selected image
once with all its reasons, plus 75 phase-one images of the preferred set for the stability
test. Here "bodies" name the preferred set's images, as in the paper.

Ties are broken by stimulus id: among equal scores the smallest id (string order) wins, for
the top, the bottom and the most similar alike.

Not in the paper, and off by default: with an ensemble (``intervals``) every prediction gets an
interval, carried by each pick and by the list's prediction table (which is registered);
``ranking = "confident"`` ranks the top by the interval's lower bound and the bottom by its
upper bound; ``mode = "graded"`` replaces the top and bottom by the candidates nearest evenly
spaced predicted levels (``graded_order``).

Candidates are scored from cell-major maps ``[H*W, M, F]`` (``candidate_cells``): a channel
reads at most four cells, so predictions and similarity numerators are per-cell matrix
products over the channels that use each cell, and only the similarity's norm needs a pass
per channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from stimloop_contract.configs import SelectionConfig

from stimloop.science.candidate_cells import cell_products
from stimloop.science.intervals import Bounded, Ensemble, Intervals
from stimloop.science.readout import FittedReadout, as_tensor
from stimloop.science.readout_model import bilinear_weights
from stimloop.science.responses import ChannelInclusion
from stimloop.science.similarity import weighted_cosine

ROLES = ("top", "bottom", "similar", "level")


@dataclass(frozen=True)
class Scores:
    """Per candidate and channel: prediction ``[M, C]`` (spikes/s), similarity ``[M, C]``."""

    predicted: np.ndarray
    similarity: np.ndarray


def score_candidates(
    cells: torch.Tensor,
    mu: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    a_ref: np.ndarray,
    height: int = 7,
    width: int = 7,
    chunk: int = 256,
) -> Scores:
    """Eq. (1) predictions and eq. (2) similarities to each channel's reference body.

    ``cells``: ``[H*W, M, F]``; ``mu`` ``[C, 2]``; ``w`` ``[C, F]``; ``b`` ``[C]``; ``a_ref``
    ``[C, F]`` the reference body's read-out features per channel. Runs where ``cells`` lives
    (the worker keeps them on its GPU when it has one).
    """
    dev = cells.device
    if dev.type != "cpu":
        chunk = cells.shape[1]  # a GPU wants whole columns, not cache-sized row chunks
    k = bilinear_weights(torch.as_tensor(mu, dtype=torch.float32), height, width).double().to(dev)
    w_t = torch.as_tensor(w, dtype=torch.float64, device=dev)
    a_ref_t = torch.as_tensor(a_ref, dtype=torch.float64, device=dev)
    v_t = w_t.square() * a_ref_t  # <a w, a_ref w> = a . v
    m, c = cells.shape[1], len(w_t)
    lin = cell_products(cells, k, torch.cat([w_t, v_t]), torch.cat([torch.arange(c)] * 2))
    predicted = lin[:, :c] + torch.as_tensor(b, dtype=torch.float64, device=dev)
    norm = torch.zeros(m, c, dtype=torch.float64, device=dev)
    corners = [torch.nonzero(k[j] > 0).flatten().tolist() for j in range(c)]
    scaled = [[(k[j, u] * w_t[j]).to(torch.float32) for u in corners[j]] for j in range(c)]
    # |a w| per channel, a being the sum of its (at most 4) weighted cells. Rows in small
    # chunks so the cell slices stay in cache for every channel that reads them; one buffer.
    buffer = torch.empty(min(chunk, m), cells.shape[2], dtype=torch.float32, device=dev)
    for start in range(0, m, chunk):
        rows = slice(start, min(start + chunk, m))
        slices = {u: cells[u, rows].to(torch.float32) for u in set().union(*map(set, corners))}
        acc = buffer[: rows.stop - rows.start]
        for j in range(c):
            torch.mul(slices[corners[j][0]], scaled[j][0], out=acc)
            for u, scale in zip(corners[j][1:], scaled[j][1:]):
                acc.addcmul_(slices[u], scale)
            norm[rows, j] = torch.linalg.vector_norm(acc, dim=1).double()
    sim = weighted_cosine(lin[:, c:], norm, (a_ref_t * w_t).norm(dim=1))  # eq. (2)
    return Scores(predicted.cpu().numpy(), sim.cpu().numpy())


def ranked(values: np.ndarray, ids: Sequence[str], descending: bool) -> np.ndarray:
    """Indices of ``values`` in rank order, ties broken by the smaller id."""
    key = -values if descending else values
    return np.lexsort((np.asarray(ids), key))


@dataclass(frozen=True)
class Pick:
    """One candidate chosen for one channel in one role."""

    stimulus: str
    category: str
    role: str  # top | bottom | similar | level
    rank: int  # 1 = best in that role (level: 1 = the lowest)
    predicted: float  # spikes/s
    similarity: float  # eq. (2) to the channel's reference body
    sd: float | None = None  # the prediction's total sd (intervals.py), spikes/s
    lower: float | None = None  # its interval at the selection's nominal level
    upper: float | None = None
    centre: float | None = None  # the interval's centre (calibrated: not the prediction)
    target: float | None = None  # level: the evenly spaced predicted level it stands for


@dataclass
class ChannelSelection:
    channel: str
    included: bool
    reason: str  # why excluded ("" when included)
    reference: str | None = None  # body with the highest recorded phase-one response
    reference_response: float | None = None
    picks: list[Pick] = field(default_factory=list)


@dataclass(frozen=True)
class Reason:
    """Why an image is on the phase-two list (one per channel and role that chose it)."""

    channel: str
    role: str
    rank: int
    predicted: float
    similarity: float


@dataclass
class ListEntry:
    stimulus: str
    category: str
    reasons: list[Reason] = field(default_factory=list)


@dataclass
class PhaseTwoList:
    """Every selected image once (with all its reasons), then the stability bodies."""

    entries: list[ListEntry]
    stability_images: list[str]
    seed: int
    stability_rule: str

    @property
    def stimuli(self) -> list[str]:
        return [e.stimulus for e in self.entries] + self.stability_images

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PredictionTable(Bounded):
    """What the model predicts for every selected image and included channel.

    ``stimuli`` ``[n]`` (the list's selected images, in its order) of ``categories``;
    ``predicted`` and ``sd`` ``[n, C]`` in spikes/s (``sd`` NaN without an ensemble);
    ``level`` the intervals' nominal coverage; ``ensemble`` its metadata (``{}`` without);
    ``centre`` ``[n, C]`` the intervals' centres where a calibration moved them (None: the
    predictions).
    """

    channels: list[str]
    stimuli: list[str]
    categories: list[str]
    predicted: np.ndarray
    sd: np.ndarray
    level: float
    ensemble: dict[str, Any]
    centre: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        nan_none = lambda a: [[None if np.isnan(v) else float(v) for v in row] for row in a]  # noqa: E731
        return {
            "channels": self.channels,
            "stimuli": self.stimuli,
            "categories": self.categories,
            "predicted": self.predicted.tolist(),
            "sd": nan_none(self.sd),
            "lower": nan_none(self.lower),
            "upper": nan_none(self.upper),
            "level": self.level,
            "ensemble": self.ensemble,
            "centre": None if self.centre is None else nan_none(self.centre),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictionTable:
        def array(key: str) -> np.ndarray:
            rows = [[np.nan if v is None else v for v in row] for row in data[key]]
            return np.asarray(rows, dtype=np.float64).reshape(len(data["stimuli"]), -1)

        return cls(
            list(data["channels"]),
            list(data["stimuli"]),
            list(data["categories"]),
            array("predicted"),
            array("sd"),
            float(data["level"]),
            dict(data.get("ensemble") or {}),
            array("centre") if data.get("centre") is not None else None,
        )


@dataclass
class Selection:
    channels: list[ChannelSelection]
    phase_two: PhaseTwoList
    config: SelectionConfig
    predictions: PredictionTable | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": [asdict(c) for c in self.channels],
            "phase_two": self.phase_two.to_dict(),
            "config": asdict(self.config),
            "predictions": self.predictions.to_dict() if self.predictions else None,
        }


@dataclass(frozen=True)
class Candidates:
    """One candidate category: its ids and cell-major maps ``[H*W, M, F]``."""

    category: str
    ids: list[str]
    cells: torch.Tensor

    def __post_init__(self) -> None:
        if self.cells.shape[1] != len(self.ids):
            raise ValueError(f"{self.category}: {len(self.ids)} ids for {self.cells.shape[1]} maps")


STABILITY_RULE = (
    "images of the preferred set ranked by their phase-one response "
    "(per-channel z-scores averaged over the included "
    "channels, or over all channels when none is included; ties by id), cut into n equal-count "
    "strata, one body drawn uniformly from each stratum with the recorded seed"
)


def stability_images(
    body_ids: Sequence[str], responses: np.ndarray, n: int, seed: int
) -> list[str]:
    """``n`` preferred-set images (bodies) spread over the range of recorded responses (see
    ``STABILITY_RULE``).

    ``responses``: ``[C, S]`` phase-one means of the channels that rank the bodies.
    """
    if n >= len(body_ids):
        return sorted(body_ids)
    r = np.asarray(responses, dtype=np.float64)
    sd = np.nanstd(r, axis=1, keepdims=True)
    z = (r - np.nanmean(r, axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    score = np.nan_to_num(np.nanmean(z, axis=0)) if len(r) else np.zeros(len(body_ids))
    order = ranked(score, body_ids, descending=False)
    rng = np.random.default_rng([seed, 0x57AB])
    strata = np.array_split(order, n)
    return [body_ids[int(rng.choice(stratum))] for stratum in strata]


def graded_order(pred: np.ndarray, ids: Sequence[str], levels: int) -> list[tuple[int, float]]:
    """Candidates nearest ``levels`` evenly spaced predicted levels from the lowest prediction
    to the highest, lowest first: (index, target). Each candidate serves one level: where the
    nearest is taken, the next nearest (ties by the smaller id)."""
    taken: set[int] = set()
    out = []
    for target in np.linspace(pred.min(), pred.max(), levels):
        order = np.lexsort((np.asarray(ids), np.abs(pred - target)))
        i = next(int(i) for i in order if int(i) not in taken)
        taken.add(i)
        out.append((i, float(target)))
    return out


def role_orders(
    config: SelectionConfig,
    ids: Sequence[str],
    pred: np.ndarray,
    sim: np.ndarray,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
) -> list[tuple[str, list[tuple[int, float | None]]]]:
    """Each role's picks for one channel and set, in rank order: (role, [(index, target)]).

    The paper's mode: the top and bottom predicted ("confident": by the interval's lower bound
    for the top and its upper bound for the bottom) and the most similar; the graded mode: the
    levels (``graded_order``) and the most similar.
    """
    top_key, bottom_key = pred, pred
    if config.ranking == "confident":
        if lower is None or upper is None:
            raise ValueError("the confident ranking needs intervals: an ensemble of readouts")
        top_key, bottom_key = lower, upper

    def first(values: np.ndarray, n: int, descending: bool) -> list[tuple[int, float | None]]:
        return [(int(i), None) for i in ranked(values, ids, descending)[:n]]

    similar = ("similar", first(sim, config.n_similar, True))
    if config.mode == "graded":
        return [("level", list(graded_order(pred, ids, config.levels))), similar]
    return [
        ("top", first(top_key, config.n_top, True)),
        ("bottom", first(bottom_key, config.n_bottom, False)),
        similar,
    ]


def select(
    readout: FittedReadout,
    inclusion: Sequence[ChannelInclusion],
    body_ids: Sequence[str],
    body_means: np.ndarray,
    body_maps: np.ndarray | torch.Tensor,
    candidates: Sequence[Candidates],
    config: SelectionConfig = SelectionConfig(),
    seed: int = 0,
    ensemble: Ensemble | None = None,
    held: frozenset[str] = frozenset(),
) -> Selection:
    """Choose the phase-two images.

    ``readout``: fitted models of the included channels; ``inclusion``: every channel's verdict
    (excluded ones appear with their reason and no picks); ``body_means``: ``[C_all, S]``
    phase-one means in the order of ``inclusion`` and ``body_ids``; ``body_maps``:
    ``[S, F, H, W]``; ``ensemble``: bootstrap members of the included channels (``intervals``),
    which give every prediction its interval; ``held``: candidates phase one showed to
    calibrate the intervals (``config.calibration``), which are not picked.
    """
    for cand in candidates:
        need = max(config.n_top, config.n_bottom, config.n_similar)
        if config.mode == "graded":
            need = max(config.levels, config.n_similar)
        free = sum(1 for i in cand.ids if i not in held)
        if free < need:
            shown = " besides those shown for calibration" if free < len(cand.ids) else ""
            raise ValueError(
                f"the {cand.category} set has {free} candidates{shown}, fewer than the {need} "
                "per role asked for; register a larger set or lower the counts"
            )
    included = [v.channel for v in inclusion if v.included]
    missing = sorted(set(included) - set(readout.channels))
    if missing:
        raise ValueError(f"included channels without a fitted model: {missing}")
    names = [v.channel for v in inclusion]
    means = np.asarray(body_means, dtype=np.float64)
    fit = readout.select(included) if included else None
    if ensemble is not None and fit is not None and ensemble.channels != fit.channels:
        raise ValueError("the ensemble's channels are not the included channels")
    # stimulus -> (category, predictions, sd, interval centres), each [C]
    rows_of: dict[str, tuple[str, np.ndarray, np.ndarray, np.ndarray]] = {}
    out: dict[str, ChannelSelection] = {
        v.channel: ChannelSelection(v.channel, v.included, v.reason) for v in inclusion
    }
    if fit is not None:
        rows = [names.index(c) for c in included]
        best_body = [int(ranked(means[r], body_ids, descending=True)[0]) for r in rows]
        a_ref_all = fit.features(as_tensor(body_maps)[best_body])  # [C, C, F]
        a_ref = a_ref_all[torch.arange(len(included)), torch.arange(len(included))].numpy()
        h, w = fit.map_shape[1:]
        for j, channel in enumerate(included):
            out[channel].reference = body_ids[best_body[j]]
            out[channel].reference_response = float(means[rows[j], best_body[j]])
        for cand in candidates:
            scores = score_candidates(cand.cells, fit.mu, fit.w, fit.b, a_ref, h, w)
            iv = Intervals(
                scores.predicted, np.full_like(scores.predicted, np.nan), config.interval
            )
            if ensemble is not None:
                members = ensemble.members_on_cells(cand.cells, h, w)
                iv = ensemble.intervals(cand.category, scores.predicted, members, config.interval)
            sd, lows, highs, centres = iv.sd, iv.lower, iv.upper, iv.middle
            kept = np.array([i for i, s in enumerate(cand.ids) if s not in held], dtype=int)
            kept_ids = [cand.ids[i] for i in kept]
            picked: set[int] = set()
            for j, channel in enumerate(included):
                pred, sim = scores.predicted[kept, j], scores.similarity[kept, j]
                low, high = lows[:, j], highs[:, j]
                bounds = (low[kept], high[kept]) if ensemble is not None else (None, None)
                for role, order in role_orders(config, kept_ids, pred, sim, *bounds):
                    for rank, (k, target) in enumerate(order, start=1):
                        i = int(kept[k])
                        picked.add(i)
                        out[channel].picks.append(
                            Pick(
                                cand.ids[i],
                                cand.category,
                                role,
                                rank,
                                float(scores.predicted[i, j]),
                                float(scores.similarity[i, j]),
                                target=target,
                                **_interval(sd[i, j], low[i], high[i], centres[i, j]),
                            )
                        )
            for i in sorted(picked):
                rows_of[cand.ids[i]] = (cand.category, scores.predicted[i], sd[i], centres[i])
    entries: dict[str, ListEntry] = {}
    for channel in names:
        for pick in out[channel].picks:
            entry = entries.setdefault(pick.stimulus, ListEntry(pick.stimulus, pick.category))
            entry.reasons.append(
                Reason(channel, pick.role, pick.rank, pick.predicted, pick.similarity)
            )
    ranking_rows = [names.index(c) for c in included] or list(range(len(names)))
    bodies = stability_images(body_ids, means[ranking_rows], config.stability_images, seed)
    phase_two = PhaseTwoList(list(entries.values()), bodies, seed, STABILITY_RULE)
    table = None
    if fit is not None:
        listed = [e.stimulus for e in phase_two.entries]
        table = PredictionTable(
            list(included),
            listed,
            [rows_of[s][0] for s in listed],
            np.array([rows_of[s][1] for s in listed]).reshape(len(listed), len(included)),
            np.array([rows_of[s][2] for s in listed]).reshape(len(listed), len(included)),
            config.interval,
            ensemble.metadata() if ensemble is not None else {},
            np.array([rows_of[s][3] for s in listed]).reshape(len(listed), len(included))
            if ensemble is not None and ensemble.calibrations
            else None,
        )
    return Selection([out[c] for c in names], phase_two, config, table)


def _interval(sd: float, low: float, high: float, centre: float) -> dict[str, float | None]:
    """A pick's sd, lower and upper bound and their centre (None without an ensemble)."""
    if not np.isfinite(sd):
        return {"sd": None, "lower": None, "upper": None, "centre": None}
    return {"sd": float(sd), "lower": float(low), "upper": float(high), "centre": float(centre)}


def presentation_sequence(stimuli: Sequence[str], repeats: int, seed: int) -> list[str]:
    """Each stimulus ``repeats`` times in seeded pseudorandom blocks, never twice in a row.

    Every block is a permutation of all stimuli; when a block would start with the image that
    ended the previous one, its first two images are swapped.
    """
    if len(set(stimuli)) != len(stimuli):
        raise ValueError("the stimuli of a sequence must be unique")
    if len(stimuli) < 2 and repeats > 1:
        raise ValueError("one image cannot be repeated without showing it twice in a row")
    rng = np.random.default_rng([seed, 0x5E9])
    sequence: list[str] = []
    for _ in range(repeats):
        block = [stimuli[i] for i in rng.permutation(len(stimuli))]
        if sequence and block[0] == sequence[-1]:
            block[0], block[1] = block[1], block[0]
        sequence += block
    return sequence


def selection_from_dict(data: Mapping[str, Any]) -> Selection:
    """Rebuild a ``Selection`` from ``Selection.to_dict()``."""
    channels = [
        ChannelSelection(
            c["channel"],
            c["included"],
            c["reason"],
            c["reference"],
            c["reference_response"],
            [Pick(**p) for p in c["picks"]],
        )
        for c in data["channels"]
    ]
    p2 = data["phase_two"]
    entries = [
        ListEntry(e["stimulus"], e["category"], [Reason(**r) for r in e["reasons"]])
        for e in p2["entries"]
    ]
    phase_two = PhaseTwoList(
        entries, list(p2["stability_images"]), p2["seed"], p2["stability_rule"]
    )
    table = data.get("predictions")
    return Selection(
        channels,
        phase_two,
        SelectionConfig(**data["config"]),
        PredictionTable.from_dict(table) if table else None,
    )

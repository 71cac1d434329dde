"""Shared-feature saliency maps of a channel's pair by parallel backpropagation (sec. 3.3)."""

from __future__ import annotations

from typing import Any

import numpy as np
from stimloop_contract.saliency import (
    DEFAULT_PAIR_NEEDS_PHASE_TWO,
    SaliencyRequest,
    SanityRequest,
)

from stimloop.reports.figures import PairPanel, pair_figure
from stimloop.science import saliency as sal
from stimloop.science.backbone import load_input
from stimloop.science.readout import FittedReadout
from stimloop.science.responses import response_table
from stimloop.storage.session import SessionConfig, SessionFiles
from stimloop.worker.context import Report, WorkerContext, provenance, quiet
from stimloop.worker.sanity import check_saliency


def saliency(
    res: WorkerContext,
    session_id: str,
    request: SaliencyRequest,
    key: str,
    report: Report = quiet,
    generation: int | None = None,
) -> dict[str, Any]:
    """Eq. (4)-(7) for a channel's pair: ``x_out`` an image of another category (an object),
    ``x_in`` one of the preferred set (a body); sec. 5.2's default pair when neither is
    named. Stored under the fence, so the maps of a replaced upload never land."""
    record, files = res.session_for_job(session_id, generation)
    config = record.config
    readout = files.readout()
    channel = request.channel
    j = readout.channels.index(channel)
    pair = request.pair()
    x_out_id, x_in_id = pair or default_pair(res, files, config, readout, channel)
    backbone = res.backbone(config.backbone)
    others = {i: p for c in config.others for i, p in res.set_paths(c.set).items()}
    preferred = res.set_paths(config.preferred_set)
    x_out, x_in = load_input(others[x_out_id]), load_input(preferred[x_in_id])
    coverage = request.coverage
    if coverage is None and backbone.device.type != "cuda":
        coverage = res.settings.saliency_cpu_coverage  # each feature costs a backward pass
    cfg = sal.SaliencyConfig(
        method=request.method, coverage=coverage, sigma=request.sigma, seed=config.seed
    )
    result = sal.parallel_backprop(
        backbone.model,
        x_out,
        x_in,
        readout.mu[j],
        readout.w[j],
        cfg,
        progress=lambda done, total: report(
            "saliency", done / max(total, 1), f"{done}/{total} feature gradients"
        ),
    )
    fit_row: dict[str, Any] = next(
        (row for row in files.channels()["channels"] if row["channel"] == channel), {}
    )
    meta = {
        "key": key,
        "channel": channel,
        "fit_flag": fit_row.get("fit_flag"),  # maps of a fit that failed say so
        "x_out": x_out_id,
        "x_out_category": category_of(config, x_out_id, res),
        "x_in": x_in_id,
        "default_pair": pair is None,
        **result.metadata(),
        **provenance(config, readout.weights_sha256),
    }
    panel = PairPanel(
        channel,
        x_out_id,
        x_in_id,
        x_out.permute(1, 2, 0).numpy(),
        x_in.permute(1, 2, 0).numpy(),
        result.display_out,
        result.display_in,
        result.s,
        result.norm_out,
        result.norm_in,
    )
    figure = pair_figure(panel)
    arrays = {
        "map_out": result.map_out,
        "map_in": result.map_in,
        "display_out": result.display_out,
        "display_in": result.display_in,
        "beta": result.beta,
        "features": result.features,
    }
    with res.fenced(session_id, record.generation):
        files.write_saliency(key, arrays, figure, meta)
    if request.sanity:
        meta["sanity"] = check_saliency(
            res, session_id, key, SanityRequest.model_validate({}), report, record.generation
        )
    return meta


def category_of(config: SessionConfig, image: str, res: WorkerContext) -> str:
    """The category of the other-category candidate set that holds ``image``."""
    for c in config.others:
        if image in res.set_paths(c.set):
            return c.category
    raise KeyError(image)


def default_pair(
    res: WorkerContext,
    files: SessionFiles,
    config: SessionConfig,
    readout: FittedReadout,
    channel: str,
) -> tuple[str, str]:
    """Sec. 5.2: among the top-5 recorded images of the other categories (phase two's
    objects) and the top-15 recorded images of the preferred set (phase one's bodies), the
    pair with the highest similarity."""
    p1 = response_table(files.trials("phase1", config.windows))
    if not files.has_trials("phase2"):
        raise ValueError(DEFAULT_PAIR_NEEDS_PHASE_TWO)
    p2 = response_table(files.trials("phase2", config.windows))
    sets = {c.set: set(res.store.get_set(c.set).ids) for c in config.others}
    shown = {s: [i for i in p2.stimuli if i in ids] for s, ids in sets.items()}
    if not any(shown.values()):
        raise ValueError("phase two recorded no images of other categories; name x_out and x_in")
    top_in = sal.top_recorded(p1.mean[p1.channel_index(channel)], p1.stimuli, 15)
    c2 = p2.channel_index(channel)
    recorded = [i for ids in shown.values() for i in ids]
    top_out = sal.top_recorded(p2.means_for(recorded)[c2], recorded, 5)
    j = readout.channels.index(channel)
    out_maps = [
        res.maps(config.backbone, s, [i for i in top_out if i in ids])[1]
        for s, ids in shown.items()
        if any(i in ids for i in top_out)
    ]
    order = [i for s, ids in shown.items() for i in top_out if i in ids]
    _, in_maps = res.maps(config.backbone, config.preferred_set, top_in)
    one = readout.select([channel])
    a_out = one.features(np.concatenate(out_maps))[:, 0].numpy()
    a_in = one.features(in_maps)[:, 0].numpy()
    x_out, x_in, _ = sal.default_pair(a_out, a_in, readout.w[j], order, top_in)
    return x_out, x_in

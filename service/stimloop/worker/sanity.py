"""Sanity checks of a stored saliency result's maps (Adebayo et al. 2018; ``science.sanity``).

The model check re-draws the readout's ``w`` and re-initialises the backbone from the top;
the data check refits the channel's readout on phase one with the stimulus labels permuted
(seeded per channel, the session's fit settings and split). Both recompute the maps of the
result's pair with its method, and the original maps with the same settings, so a similarity
measures only the randomisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stimloop_contract.saliency import SanityRequest

from stimloop.reports.figures import cascade_figure
from stimloop.science import saliency as sal
from stimloop.science import sanity as sn
from stimloop.science.backbone import load_input
from stimloop.science.readout import fit_readouts, make_split
from stimloop.science.responses import response_table
from stimloop.storage.session import SessionConfig, SessionFiles
from stimloop.worker.context import Report, WorkerContext, provenance, quiet


def check_saliency(
    res: WorkerContext,
    session_id: str,
    key: str,
    options: SanityRequest,
    report: Report = quiet,
    generation: int | None = None,
) -> dict[str, Any]:
    """Both checks of the saliency result ``key`` with ``options`` (validated at the API).
    Stored under the fence beside the result, whose metadata gains the verdict."""
    record, files = res.session_for_job(session_id, generation)
    config = record.config
    meta = files.saliency_meta(key)
    readout = files.readout()
    channel = meta["channel"]
    j = readout.channels.index(channel)
    backbone = res.backbone(config.backbone)
    others = {i: p for c in config.others for i, p in res.set_paths(c.set).items()}
    x_out = load_input(others[meta["x_out"]])
    x_in = load_input(res.set_paths(config.preferred_set)[meta["x_in"]])
    max_features = options.max_features
    if max_features is None and backbone.device.type != "cuda":
        max_features = res.settings.sanity_cpu_features  # each costs a backward pass
    cfg = sal.SaliencyConfig(
        method=meta["method"],
        coverage=meta["config"]["coverage"],
        sigma=meta["config"]["sigma"],
        seed=config.seed,
        max_features=max_features,
    )

    def maps(net: torch.nn.Module, mu: Any, w: np.ndarray) -> sn.MapPair:
        result = sal.parallel_backprop(net, x_out, x_in, mu, w, cfg)
        return result.map_out, result.map_in

    report("refitting", 0.0, "the readout on phase one with the stimulus labels permuted")
    refit = permuted_refit(res, files, config, channel, report)
    sanity_config = sn.SanityConfig(
        metric=options.metric,
        max_similarity=options.max_similarity,
        seed=config.seed,
    )
    result = sn.sanity_checks(
        backbone.model,
        maps,
        readout.mu[j],
        readout.w[j],
        torch.stack([x_out, x_in]),
        refit=refit,
        method=f"parallel_backprop ({cfg.method})",
        config=sanity_config,
        progress=lambda done, total, name: report(
            "sanity", done / total, f"maps {done}/{total}: {name}"
        ),
    )
    summary = {
        "key": key,
        "channel": channel,
        "x_out": meta["x_out"],
        "x_in": meta["x_in"],
        **result.summary(),
        "max_features": max_features,
        "permutation_seed": config.seed,
        **provenance(config, readout.weights_sha256),
    }
    image_out = x_out.permute(1, 2, 0).numpy()
    image_in = x_in.permute(1, 2, 0).numpy()
    figure = cascade_figure(result, image_out, image_in, channel)
    with res.fenced(session_id, record.generation):
        files.write_sanity(key, summary, figure)
    report("done", 1.0, "sanity checks ready")
    return {k: summary[k] for k in ("passed", "model_passed", "data_passed")}


def permuted_refit(
    res: WorkerContext, files: SessionFiles, config: SessionConfig, channel: str, report: Report
) -> tuple[np.ndarray, np.ndarray]:
    """The channel's readout ``(mu [2], w [F])`` fitted on phase one with its stimulus means
    permuted across the preferred set's images (seeded per channel), with the session's fit
    settings, split and silhouettes."""
    trials = files.trials("phase1", config.windows)
    ids, maps = res.maps(config.backbone, config.preferred_set)
    shown = set(trials.stimulus)
    body_ids = [i for i in ids if i in shown]
    maps = maps[[k for k, i in enumerate(ids) if i in shown]]
    table = response_table(trials, stimuli=body_ids)
    targets = sn.permuted_labels(table.mean[table.channel_index(channel)], config.seed, channel)
    split = make_split(len(body_ids), config.fit.split, config.seed)
    sil = None
    if config.fit.silhouettes:
        train = [body_ids[i] for i in split.train]
        sil = res.silhouette_maps(config.backbone, config.preferred_set, train, report)
    backbone = res.backbone(config.backbone)
    fitted = fit_readouts(
        maps,
        targets[:, None],
        [channel],
        split,
        body_ids=body_ids,
        silhouette_maps=sil,
        config=config.fit,
        seed=config.seed,
        device=backbone.device,
        progress=lambda epoch, total, _best: report(
            "refitting", epoch / total, f"permuted labels: epoch {epoch}/{total}"
        ),
        progress_every=10,
    )
    return fitted.mu[0], fitted.w[0]

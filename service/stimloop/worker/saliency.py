"""Shared-feature saliency maps of a channel's pair by parallel backpropagation (sec. 3.3)."""

from __future__ import annotations

from typing import Any

from stimloop.reports.figures import PairPanel, pair_figure
from stimloop.science import saliency as sal
from stimloop.science.backbone import load_input
from stimloop.science.responses import response_table
from stimloop.storage.atomic import write_atomic
from stimloop.storage.store import read_npz, write_json, write_npz
from stimloop.worker.fitting import load_readout, trials_from_columns
from stimloop.worker.resources import Report, Resources, provenance, quiet, windows_of


def saliency(
    res: Resources,
    session_id: str,
    request: dict[str, Any],
    key: str,
    report: Report = quiet,
    generation: int | None = None,
) -> dict[str, Any]:
    store = res.store
    record, generation = res.session_for_job(session_id, generation)
    config = record["config"]
    readout = load_readout(store.session_dir(session_id))
    channel = request["channel"]
    j = readout.channels.index(channel)
    obj, body = request.get("object"), request.get("body")
    if obj is None or body is None:
        obj, body = default_pair(res, session_id, config, readout, channel)
    backbone = res.backbone(config["backbone"])
    objects = res.image_paths(store.get_set(config["object_set"]))
    bodies = res.image_paths(store.get_set(config["body_set"]))
    x_out, x_in = load_input(objects[obj]), load_input(bodies[body])
    cfg = sal.SaliencyConfig(
        method=request.get("method", sal.SETTINGS.method),
        coverage=request.get("coverage", sal.SETTINGS.coverage),
        sigma=request.get("sigma", sal.SETTINGS.sigma),
        seed=config["seed"],
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
    folder = store.path(session_id, "saliency")
    meta = {
        "key": key,
        "channel": channel,
        "object": obj,
        "body": body,
        "default_pair": request.get("object") is None,
        **result.metadata(),
        **provenance(config, readout.weights_sha256),
    }
    panel = PairPanel(
        channel,
        obj,
        body,
        x_out.permute(1, 2, 0).numpy(),
        x_in.permute(1, 2, 0).numpy(),
        result.display_out,
        result.display_in,
        result.s,
        result.norm_out,
        result.norm_in,
    )
    figure = pair_figure(panel)
    with res.fenced(session_id, generation):  # maps of a replaced upload never land
        write_npz(
            folder / f"{key}.npz",
            {
                "map_out": result.map_out,
                "map_in": result.map_in,
                "display_out": result.display_out,
                "display_in": result.display_in,
                "beta": result.beta,
                "features": result.features,
            },
        )
        write_atomic(folder / f"{key}.png", figure)
        write_json(folder / f"{key}.json", meta)
    return meta


def default_pair(
    res: Resources, session_id: str, config: dict[str, Any], readout, channel: str
) -> tuple[str, str]:
    """Sec. 5.2: the top-5 recorded objects (phase two) and top-15 bodies (phase one)."""
    windows = windows_of(config)
    p1 = response_table(
        trials_from_columns(read_npz(res.store.path(session_id, "phase1.npz")), windows)
    )
    object_set = {e["id"] for e in res.store.get_set(config["object_set"])["entries"]}
    p2_path = res.store.path(session_id, "phase2.npz")
    if not p2_path.is_file():
        raise ValueError(
            "the default pair needs phase two's recorded objects; upload phase two "
            "or name the object and the body"
        )
    p2 = response_table(trials_from_columns(read_npz(p2_path), windows))
    objects = [s for s in p2.stimuli if s in object_set]
    if not objects:
        raise ValueError("phase two recorded no objects; name the object and the body")
    top_bodies = sal.top_recorded(p1.mean[p1.channel_index(channel)], p1.stimuli, 15)
    c2 = p2.channel_index(channel)
    top_objects = sal.top_recorded(p2.means_for(objects)[c2], objects, 5)
    j = readout.channels.index(channel)
    _, obj_maps = res.maps(config["backbone"], config["object_set"], top_objects)
    _, body_maps = res.maps(config["backbone"], config["body_set"], top_bodies)
    one = readout.select([channel])
    a_obj = one.features(obj_maps)[:, 0].numpy()
    a_body = one.features(body_maps)[:, 0].numpy()
    obj, body, _ = sal.default_pair(a_obj, a_body, readout.w[j], top_objects, top_bodies)
    return obj, body

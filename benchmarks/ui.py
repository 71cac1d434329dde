"""The live session page of a 32-channel session: the API's time per page.

Run: ``python -m benchmarks.ui [--channels 32] [--loads 20]`` (Redis at
``STIMLOOP_REDIS_URL``, own key prefix, keys deleted afterwards).

A session as the paper's: 475 bodies x 8 repeats on 32 channels (phase one's 121,600 trials),
every channel fitted, its picks among 200 objects and 100 control bodies, the phase-two
recording and its analysis (with the fit metrics' bootstraps), all written as the service
writes them; the readouts read 64 random features (the page never opens the maps). Measured in
one process through the app (no network): the session page, against the JSON analysis of
``/v1`` as the baseline, and the page's progress poll. ``--jobs`` saliency jobs of the session
wait in the queue meanwhile (no worker takes them), so the page and the poll list them with
their places and estimates, as while an analyst's maps wait.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from redis import Redis
from stimloop.api.app import create_app
from stimloop.api.auth import create_token
from stimloop.runtime.settings import Settings
from stimloop.science import selection as sel
from stimloop.science.analysis import analyse
from stimloop.science.candidate_cells import cell_major
from stimloop.science.readout import FittedReadout
from stimloop.science.responses import ChannelInclusion, response_table, trials_from_rates
from stimloop.storage.registry import default_registry_path
from stimloop.storage.store import Store
from stimloop.worker.queue import LANES, enqueue, queue_name
from stimloop_contract.configs import ReadoutConfig, SelectionConfig

from benchmarks.fixtures import paper_session, store_phase_one
from benchmarks.machine import describe

F = 64


def session_files(store: Store, channels: list[str], rng: np.random.Generator) -> str:
    bodies = [f"body_{i:04d}" for i in range(475)]
    objects = [f"object_{i:04d}" for i in range(200)]
    controls = [f"control_body_{i:04d}" for i in range(100)]
    maps = {k: rng.gamma(2, 1, (len(v), F, 7, 7)).astype(np.float32) for k, v in
            (("b", bodies), ("o", objects), ("c", controls))}  # fmt: skip
    c = len(channels)
    readout = FittedReadout(
        channels=channels,
        mu=rng.uniform(-0.8, 0.8, (c, 2)),
        w=rng.normal(size=(c, F)),
        b=rng.normal(20, 2, size=c),
        best_epoch=np.zeros(c, int),
        loss={},
        r={},
        p={},
        split_ids={"test": bodies[-25:]},
        config=ReadoutConfig(),
        seed=0,
        weights_sha256="benchmark",
        map_shape=(F, 7, 7),
    )

    names = {"b": bodies, "o": objects, "c": controls}

    def record(ids: list[str], kind: str, repeats: int) -> dict[str, np.ndarray]:
        rows = [names[kind].index(i) for i in ids]
        truth = readout.predict(maps[kind][rows])  # [n, C]
        n = len(ids)
        stim = np.repeat(np.array(ids), c * repeats)
        chan = np.tile(np.repeat(np.array(channels), repeats), n)
        rate = np.repeat(truth.ravel(), repeats) + rng.normal(0, 4, n * c * repeats)
        return {"stimulus": stim, "channel": chan, "rate": rate}

    sid = paper_session(store, channels, {"split": [400, 50, 25]}, {"stability_images": 75})
    phase_one = record(bodies, "b", 8)
    store_phase_one(store, sid, phase_one)
    t1 = response_table(trials_from_rates(phase_one["stimulus"], phase_one["channel"],
                                          phase_one["rate"]), channels=channels)  # fmt: skip
    inclusion = [ChannelInclusion(ch, (), True, "") for ch in channels]
    cands = [
        sel.Candidates("object", objects, cell_major(maps["o"])),
        sel.Candidates("control_body", controls, cell_major(maps["c"])),
    ]
    chosen = sel.select(
        readout, inclusion, bodies, t1.means_for(bodies), maps["b"], cands,
        SelectionConfig(stability_images=75), seed=1,
    )  # fmt: skip
    files = store.files(sid)
    rows = [
        {"channel": ch, "included": True, "reason": "", "responsive_statistic": 30.0,
         "selective_p": 1e-6, "reliable_statistic": 0.9, "mu_x": readout.mu[j, 0],
         "mu_y": readout.mu[j, 1], "r_test": 0.6, "p_test": 1e-3}
        for j, ch in enumerate(channels)
    ]  # fmt: skip
    files.write_channels({"channels": rows})
    selection = chosen.to_dict()
    selection["sequence"] = [e["stimulus"] for e in selection["phase_two"]["entries"]] * 8
    files.write_selection(selection)
    entries = chosen.phase_two.entries
    picked_o = [e.stimulus for e in entries if e.category == "object"]
    picked_c = [e.stimulus for e in entries if e.category == "control_body"]
    stab = chosen.phase_two.stability_images
    index = {k: {s: i for i, s in enumerate(v)} for k, v in (("b", bodies), ("o", objects),
                                                          ("c", controls))}  # fmt: skip
    phase_two = {k: np.concatenate([record(ids, kind, 8)[k] for ids, kind in
                                    ((stab, "b"), (picked_o, "o"), (picked_c, "c"))])
                 for k in ("stimulus", "channel", "rate")}  # fmt: skip
    t2 = response_table(trials_from_rates(phase_two["stimulus"], phase_two["channel"],
                                          phase_two["rate"]), channels=channels)  # fmt: skip
    result = analyse(
        t1, t2, readout, stab, picked_c, {"object": picked_o},
        {"object": readout.predict(maps["o"][[index["o"][s] for s in picked_o]])},
        readout.predict(maps["b"][[index["b"][s] for s in bodies[-25:]]]),
        candidates={"control_body": picked_c}, seed=1,
    )  # fmt: skip
    provenance = {"stimloop_version": "benchmark", "seed": 1, "backbone": "resnet50_random",
                  "weights_sha256": "benchmark", "torch_version": "benchmark"}  # fmt: skip
    files.write_analysis({"categories": {"preferred": "body", "preferred_candidates":
                          ["control_body"], "others": ["object"]}, **result.to_dict(),
                          "provenance": provenance})  # fmt: skip
    with store.locked(sid) as rec:
        rec.state = "analysed"
    return sid


def timed(client: TestClient, url: str, loads: int, **kwargs) -> list[float]:
    client.get(url, **kwargs)  # warm
    out = []
    for _ in range(loads):
        start = time.perf_counter()
        answer = client.get(url, **kwargs)
        out.append(time.perf_counter() - start)
        assert answer.status_code == 200, (url, answer.status_code)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=8, help="queued jobs of the session")
    args = parser.parse_args()
    url = os.environ.get("STIMLOOP_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"stimloop-bench-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    tmp = Path(tempfile.mkdtemp())
    queued: list = []
    try:
        store_dir = tmp / "models_store"
        store_dir.mkdir()
        shutil.copy(default_registry_path(), store_dir / "backbones.toml")
        settings = Settings(models_store=store_dir, stimulus_root=tmp, redis_url=url,
                            key_prefix=prefix)  # fmt: skip
        token = create_token(settings.tokens_path, "analyst", "benchmark")
        store = Store(store_dir)
        channels = [f"ch{i + 1:02d}" for i in range(args.channels)]
        sid = session_files(store, channels, np.random.default_rng(0))
        for k in range(args.jobs):  # queued, never run: listed with their places
            queued.append(enqueue(settings, redis, "saliency", sid, k, session=sid))
        with TestClient(create_app(settings)) as client:
            signed = client.post("/ui/login", data={"token": token},
                                 headers={"Origin": "http://testserver"},
                                 follow_redirects=False)  # fmt: skip
            assert signed.status_code == 303, signed.text
            page = timed(client, f"/ui/sessions/{sid}", args.loads)
            poll = timed(client, f"/ui/sessions/{sid}/progress", args.loads)
            bearer = {"Authorization": f"Bearer {token}"}
            baseline = timed(client, f"/v1/sessions/{sid}/analysis", args.loads, headers=bearer)
        ms = {k: 1000 * statistics.median(v) for k, v in
              (("page", page), ("poll", poll), ("json", baseline))}  # fmt: skip
        print(f"{date.today()}, {describe()}; {args.channels} channels, {args.jobs} queued jobs, "
              f"median of {args.loads}\n")  # fmt: skip
        print("| request | ms | vs the JSON analysis |\n|---|---|---|")
        print(f"| GET /v1/sessions/{{id}}/analysis (baseline) | {ms['json']:.1f} | 1.00x |")
        print(f"| GET /ui/sessions/{{id}} (the whole page) | {ms['page']:.1f} | "
              f"{ms['page'] / ms['json']:.2f}x |")  # fmt: skip
        print(f"| GET /ui/sessions/{{id}}/progress (each second) | {ms['poll']:.1f} | "
              f"{ms['poll'] / ms['json']:.2f}x |")  # fmt: skip
    finally:
        for job in queued:
            job.delete()
        for lane in LANES:
            redis.delete(queue_name(settings, lane))
        for key in redis.scan_iter(f"{prefix}:*"):
            redis.delete(key)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

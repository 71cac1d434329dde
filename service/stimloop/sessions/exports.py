"""What a session's results look like as files for the rig and the analysts: the phase-two
and phase-three lists as CSV for the stimulus program, and the HTML report. The same text
for ``/v1`` and the live pages."""

from __future__ import annotations

import csv
import io

import numpy as np

from stimloop.storage.store import Store


def selection_csv(st: Store, session_id: str) -> str:
    """order, stimulus, category, reasons (channel:role; ``stability`` for the repeats), and
    ``fit_flagged``: the channels among its reasons whose fit is flagged (held-out r not
    significantly positive), so a pick of an untrusted model is seen on the rig."""
    files = st.files(session_id)
    data = files.selection()
    flagged = set()
    if files.has_channels():
        flagged = {r["channel"] for r in files.channels()["channels"] if r.get("fit_flag")}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "stimulus", "category", "reasons", "fit_flagged"])
    order = 0
    for entry in data["phase_two"]["entries"]:
        order += 1
        reasons = ";".join(f"{r['channel']}:{r['role']}" for r in entry["reasons"])
        marked = sorted({r["channel"] for r in entry["reasons"]} & flagged)
        writer.writerow([order, entry["stimulus"], entry["category"], reasons, ";".join(marked)])
    category = st.get_session(session_id).config.preferred_category
    for image in data["phase_two"]["stability_images"]:
        order += 1
        writer.writerow([order, image, category, "stability", ""])
    return buffer.getvalue()


def _list_rows(st: Store, session_id: str) -> tuple[list[list], list[list]]:
    """The phase-two list's rows (order, stimulus, category, reasons, fit_flagged) and its
    presentation sequence's rows (order, stimulus, category), from ``selection_csv``'s table
    and the stored sequence."""
    table = list(csv.reader(io.StringIO(selection_csv(st, session_id))))[1:]
    category = {row[1]: row[2] for row in table}
    sequence = st.files(session_id).selection()["sequence"]
    return table, [[k, stimulus, category[stimulus]] for k, stimulus in enumerate(sequence, 1)]


def sequence_csv(st: Store, session_id: str) -> str:
    """The phase-two presentation sequence, a row per presentation in the order the stimulus
    program shows them: order, stimulus, category."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "stimulus", "category"])
    writer.writerows(_list_rows(st, session_id)[1])
    return buffer.getvalue()


def selection_mat(st: Store, session_id: str) -> bytes:
    """The phase-two list and its sequence as a MATLAB v5 MAT-file (MATLAB and Octave's
    ``load``): structs ``list`` (order, stimulus, category, reasons, fit_flagged) and
    ``sequence`` (order, stimulus, category) of column vectors (numbers as double, text as
    cell arrays of char), and ``session``, the session's id. ``struct2table`` makes either a
    table in MATLAB."""
    from scipy.io import savemat  # scipy: on demand

    table, sequence = _list_rows(st, session_id)

    def columns(rows: list[list], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        out = {}
        for k, name in enumerate(names):
            values = [row[k] for row in rows]
            if name == "order":
                out[name] = np.asarray(values, dtype=float).reshape(-1, 1)
            else:
                cells = np.empty((len(values), 1), dtype=object)
                cells[:, 0] = [str(v) for v in values]
                out[name] = cells
        return out

    buffer = io.BytesIO()
    savemat(
        buffer,
        {
            "session": session_id,
            "list": columns(table, ("order", "stimulus", "category", "reasons", "fit_flagged")),
            "sequence": columns(sequence, ("order", "stimulus", "category")),
        },
        format="5",
        do_compression=False,
        oned_as="column",
    )
    return buffer.getvalue()


def rows_csv(rows: list[dict]) -> str:
    """Table rows (e.g. ``stimloop_contract.result_tables.analysis_rows``) as CSV, one column
    per key."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def phase_three_csv(data: dict) -> str:
    """order, stimulus, kind, channels, source, q, predicted (channel:rate) of a phase-three
    list, then its stability images."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "stimulus", "kind", "channels", "source", "q", "predicted"])
    order = 0
    for e in data["entries"]:
        order += 1
        predicted = ";".join(f"{c}:{v:.4g}" for c, v in e["predicted"].items())
        writer.writerow(
            [
                order,
                e["stimulus"],
                e["kind"],
                ";".join(e["channels"]),
                e["source"],
                e["q"] or "",
                predicted,
            ]
        )
    listed = {e["stimulus"] for e in data["entries"]}
    for image in data["stability_images"]:
        if image not in listed:
            order += 1
            writer.writerow([order, image, "stability", "", image, "", ""])
    return buffer.getvalue()


def phase_three_sequence_csv(data: dict) -> str:
    """The phase-three presentation sequence, a row per presentation: order, stimulus, kind
    (a fragment's kind, or ``stability`` for an intact image shown again)."""
    kinds = {e["stimulus"]: e["kind"] for e in data["entries"]}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "stimulus", "kind"])
    for k, stimulus in enumerate(data["sequence"], 1):
        writer.writerow([k, stimulus, kinds.get(stimulus, "stability")])
    return buffer.getvalue()


def report_html(st: Store, session_id: str) -> str:
    """The session report (``reports.report``), its images read from the registered sets."""
    from PIL import Image

    from stimloop.reports.report import build_report

    config = st.get_session(session_id).config

    def loaders(set_id: str) -> dict:
        return {
            image_id: (lambda f=path: np.asarray(Image.open(f).convert("RGB")))
            for image_id, path in st.get_set(set_id).paths().items()
        }

    images = {category: loaders(set_id) for category, set_id in config.sets.items()}
    return build_report(st, session_id, images)

"""Threshold crossings of a long recording in bounded memory, and how many planted spikes
they find.

Run: ``python -m benchmarks.mua [--minutes 30] [--channels 32] [--folder /tmp/mua]``.

Writes an int16 recording of ``--minutes`` at 30 kHz on ``--channels`` channels (white noise,
10 uV SD, with 60 uV spikes planted at 20 Hz per channel, as ``tests/support/openephys_files``
plants them), in pieces, to a file; then runs ``threshold_crossings`` over it in 10 s
pieces, read as the Open Ephys reader reads them, and reports the seconds per recorded
minute, the peak resident memory of that process (against the file's size), and the fraction
of planted spikes found within 0.5 ms and of crossings that are false.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from tests.support.openephys_files import RATE, planted_signal

CHILD = """
import json, sys, time
import numpy as np
from stimloop_rig.mua import MuaSettings, threshold_crossings
from stimloop_rig.openephys import SampleFile

def high_water_kib():  # this process's own peak (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

path, channels, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = SampleFile(__import__("pathlib").Path(path), channels)
base = high_water_kib()
start = time.perf_counter()
found = threshold_crossings(data, 30000.0, np.full(channels, 0.195), MuaSettings())
seconds = time.perf_counter() - start
peak = high_water_kib()
np.savez(path.replace("continuous.dat", "crossings.npz"),
         **{f"c{c}": s for c, s in enumerate(found.samples)})
print(json.dumps({"seconds": seconds, "peak_kib": peak, "base_kib": base}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/stimloop-mua"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    path = args.folder / "continuous.dat"
    piece = 60.0  # seconds written at a time
    planted: list[list[np.ndarray]] = [[] for _ in range(args.channels)]
    with open(path, "wb") as out:
        for k in range(int(np.ceil(args.minutes * 60 / piece))):
            signal, spikes = planted_signal(piece, args.channels, 20.0, 10.0, 60.0, seed=k)
            out.write(signal.tobytes())
            for c, s in enumerate(spikes):
                planted[c].append(s + int(k * piece * RATE))
    size = path.stat().st_size
    n = size // (2 * args.channels)
    # the crossings in a fresh process of their own (numpy, scipy and the client only), so
    # that its peak memory is theirs, not the writing's
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(args.channels), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    said = json.loads(result.stdout.strip().splitlines()[-1])
    seconds, peak, base = said["seconds"], said["peak_kib"], said["base_kib"]
    with np.load(args.folder / "crossings.npz") as saved:
        samples = [saved[f"c{c}"] for c in range(args.channels)]
    hits, false, total, crossings = 0, 0, 0, 0
    for c in range(args.channels):
        truth = np.concatenate(planted[c])
        got = samples[c]
        at = np.clip(np.searchsorted(got, truth), 1, len(got) - 1)
        near = np.minimum(np.abs(got[at] - truth), np.abs(got[at - 1] - truth))
        hits += int((near <= 15).sum())
        total += len(truth)
        at = np.clip(np.searchsorted(truth, got), 1, len(truth) - 1)
        near = np.minimum(np.abs(truth[at] - got), np.abs(truth[at - 1] - got))
        false += int((near > 15).sum())
        crossings += len(got)
    minutes = n / RATE / 60
    print(
        f"{date.today()}, {describe()}; {minutes:.0f} min x {args.channels} channels at "
        f"30 kHz ({size / 2**30:.2f} GiB int16, read in 10 s pieces)\n"
    )
    print("| measure | value |\n|---|---|")
    print(f"| seconds per recorded minute | {seconds / minutes:.2f} ({seconds:.0f} s in all) |")
    print(
        f"| peak resident memory of the process | {peak / 2**20:.2f} GiB (after its imports: "
        f"{base / 2**20:.2f} GiB; the file: {size / 2**30:.2f} GiB) |"
    )
    print(f"| planted spikes found (within 0.5 ms) | {hits / total:.3f} of {total} |")
    print(f"| false crossings | {false / max(crossings, 1):.4f} of {crossings} |")
    path.unlink()
    (args.folder / "crossings.npz").unlink()


if __name__ == "__main__":
    main()

"""How long `stimloop-rig --help` and `stimloop-rig health --help` take, against a bare
Python start and against importing the whole rig client, in the same run.

Run: ``python -m benchmarks.cli_help [--repeats 7]``. Each command is started ``repeats``
times as a new process; the medians are printed with their ratio to a bare ``python -c
pass``, so a busy machine shifts all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RIG = str(Path(sys.executable).with_name("stimloop-rig"))
COMMANDS = {
    "python -c pass (the floor)": [sys.executable, "-c", "pass"],
    "stimloop-rig --help": [RIG, "--help"],
    "stimloop-rig health --help": [RIG, "health", "--help"],
    "import the whole client (api, recording)": [
        sys.executable,
        "-c",
        "import stimloop_rig.rig_client, stimloop_rig.recording",
    ],
}


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    found = {name: median_seconds(cmd, args.repeats) for name, cmd in COMMANDS.items()}
    floor = found["python -c pass (the floor)"]
    print(f"{date.today()}, median of {args.repeats} starts\n")
    print("| command | seconds | x the floor |\n|---|---|---|")
    for name, seconds in found.items():
        print(f"| {name} | {seconds:.3f} | {seconds / floor:.1f} |")


if __name__ == "__main__":
    main()

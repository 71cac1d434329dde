"""One line naming the machine a benchmark ran on, for benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe(device: torch.device | None = None) -> str:
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, {threads} threads, torch {torch.__version__}"

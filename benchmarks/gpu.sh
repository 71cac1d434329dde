#!/usr/bin/env bash
# The GPU box's performance figures in one run (under 8 minutes on one H100-class card):
# extraction, the fit at the paper's settings (eager vs CUDA graph), selection over the full
# candidate sets, one all-feature saliency pair (loop vs batched) and the turnaround from the
# stored phase-one upload to the stored phase-two list. Prints the tables and appends them to
# benchmarks/RESULTS.md with the card's name.
#
#   bash benchmarks/gpu.sh                 # on the GPU box
#   bash benchmarks/gpu.sh --cpu-smoke     # small sizes on a CPU: checks that it all runs
#   bash benchmarks/gpu.sh --only fit,saliency --results /tmp/results.md
#
# Redis: STIMLOOP_REDIS_URL if set, else a private one for the turnaround part.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
if ! "$py" -c "import stimloop" 2>/dev/null; then
  echo "stimloop is not installed for $py: installing this checkout (no dependencies)" >&2
  "$py" -m pip install -q --no-deps --no-build-isolation -e .
fi
export PYTHONUNBUFFERED=1
exec timeout "${STIMLOOP_GPU_BENCH_TIMEOUT:-480}" "$py" -m benchmarks.gpu "$@"

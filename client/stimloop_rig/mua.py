"""Multi-unit activity from the raw signal: threshold crossings, in bounded memory.

Per channel (the paper's MUA, sec. 4; what Offline Sorter's threshold crossings give):

* band-pass the signal (default 500-5000 Hz, the paper's; a zero-phase Butterworth, order 3);
* the noise: ``sigma = median(|x|) / 0.6745`` of the filtered signal (the median absolute
  deviation's robust estimate, Quiroga et al. 2004): the median over up to ``noise_chunks``
  chunks spread over the recording of each chunk's median;
* a crossing: the filtered signal falls below ``-threshold * sigma`` (default 4), then no
  other crossing within the dead time (default 1 ms).

The recording is read ``chunk_s`` seconds at a time, each chunk with ``pad_s`` of signal on
both sides for the filter, so a 30-minute, 32-channel recording at 30 kHz never sits in memory
whole (memory: about ``channels x (chunk_s + 2 pad_s) x rate x 4`` bytes per buffer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from stimloop_contract.errors import TrialFileError

from stimloop_rig.openephys import SampleFile

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MuaSettings:
    band: tuple[float, float] = (500.0, 5000.0)  # Hz, the paper's
    threshold: float = 4.0  # multiples of the robust noise estimate
    dead_time: float = 0.001  # s
    chunk_s: float = 10.0
    pad_s: float = 0.05
    noise_chunks: int = 10


@dataclass
class Crossings:
    """Per channel the crossing samples (relative to the data's first sample), the noise
    estimate and the threshold in uV."""

    samples: list[np.ndarray]
    sigma_uv: np.ndarray  # [channels]
    threshold_uv: np.ndarray  # [channels]
    seconds: float  # the recording's length

    def rates(self) -> np.ndarray:
        """Crossings per second per channel."""
        return np.array([len(s) for s in self.samples]) / max(self.seconds, 1e-12)


def _filter(rate: float, band: tuple[float, float]):
    try:
        from scipy import signal
    except ImportError:
        raise TrialFileError(
            "threshold crossings from the raw signal need scipy: pip install 'stimloop[rig]'"
        ) from None
    low, high = band
    nyquist = rate / 2
    if not 0 < low < high < nyquist:
        raise TrialFileError(
            f"the band {low:g}-{high:g} Hz does not fit a signal sampled at {rate:g} Hz "
            f"(it must lie between 0 and {nyquist:g} Hz)"
        )
    sos = signal.butter(3, [low, high], btype="bandpass", fs=rate, output="sos")
    return lambda x: signal.sosfiltfilt(sos, x, axis=0)


def threshold_crossings(
    data: np.ndarray | SampleFile,
    rate: float,
    bit_volts: np.ndarray,
    settings: MuaSettings = MuaSettings(),
    progress: Progress | None = None,
    sigma_uv: np.ndarray | None = None,
) -> Crossings:
    """Crossings of every channel of ``data`` ``[samples, channels]`` (counts; x ``bit_volts``
    = uV), read in chunks (a ``SampleFile`` reads each from disk when asked). ``sigma_uv``
    ``[channels]``: a noise estimate to use instead of this recording's own."""
    n, channels = data.shape
    filt = _filter(rate, settings.band)
    chunk = max(1, int(settings.chunk_s * rate))
    pad = int(settings.pad_s * rate)
    scale = np.asarray(bit_volts, np.float32).reshape(1, -1)

    def filtered(start: int, stop: int) -> tuple[np.ndarray, int]:
        lo, hi = max(0, start - pad), min(n, stop + pad)
        x = np.asarray(data[lo:hi], np.float32) * scale
        return filt(x).astype(np.float32), start - lo

    starts = list(range(0, n, chunk))
    picks = starts[:: max(1, len(starts) // settings.noise_chunks)][: settings.noise_chunks]
    if sigma_uv is None:  # one chunk at a time: the median of each chunk's median |x|
        medians = [np.median(np.abs(filtered(s, min(n, s + chunk))[0]), axis=0) for s in picks]
        sigma = np.median(np.stack(medians), axis=0) / 0.6745
    else:
        sigma = np.asarray(sigma_uv, np.float64)
    level = -settings.threshold * sigma
    dead = round(settings.dead_time * rate)
    found: list[list[np.ndarray]] = [[] for _ in range(channels)]
    last = np.full(channels, -(10**18), dtype=np.int64)
    for k, start in enumerate(starts):
        stop = min(n, start + chunk)
        x, offset = filtered(start, stop)
        core = x[offset : offset + (stop - start)]
        before = (
            x[offset - 1 : offset + (stop - start) - 1]
            if offset > 0
            else np.vstack([core[:1], core[:-1]])
        )
        below = (core < level) & (before >= level)
        for c in range(channels):
            hits = np.flatnonzero(below[:, c]) + start
            kept = []
            for h in hits:  # the dead time, carried across chunks
                if h - last[c] > dead:
                    kept.append(h)
                    last[c] = h
            if kept:
                found[c].append(np.asarray(kept, np.int64))
        if progress is not None:
            progress(k + 1, len(starts))
    samples = [np.concatenate(f) if f else np.zeros(0, np.int64) for f in found]
    return Crossings(samples, sigma, -level, n / rate)

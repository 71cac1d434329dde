"""The activation cache: float16 ``[2048, 7, 7]`` maps in Redis, keyed by the backbone weights'
sha256 and the image's sha256, so a map is computed once per (weights, image) and shared by
every session and worker on the same Redis. A miss is computed, never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from redis import Redis

from stimloop.science.backbone import FEATURE_SHAPE

MAP_BYTES = int(np.prod(FEATURE_SHAPE)) * 2


class ActivationCache:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, weights_sha256: str, image_sha256: str) -> str:
        return f"{self.prefix}:act:{weights_sha256}:{image_sha256}"

    def get_many(
        self,
        weights_sha256: str,
        image_shas: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[np.ndarray | None]:
        """Maps for each image (``None`` where missing), read in pipelined batches of 256;
        ``progress(read, total)`` after each."""
        out: list[np.ndarray | None] = []
        for start in range(0, len(image_shas), 256):
            if progress is not None and start:
                progress(start, len(image_shas))
            keys = [self.key(weights_sha256, s) for s in image_shas[start : start + 256]]
            for raw in self.redis.mget(keys):
                if raw is None or len(raw) != MAP_BYTES:
                    out.append(None)
                else:
                    buffer = raw.encode() if isinstance(raw, str) else raw
                    out.append(np.frombuffer(buffer, dtype=np.float16).reshape(FEATURE_SHAPE))
        return out

    def put_many(self, weights_sha256: str, image_shas: Sequence[str], maps: np.ndarray) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for sha, m in zip(image_shas, maps, strict=True):
            pipe.set(self.key(weights_sha256, sha), np.ascontiguousarray(m, np.float16).tobytes())
        pipe.execute()

    def count(self, weights_sha256: str, image_shas: Sequence[str]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for sha in image_shas:
            pipe.exists(self.key(weights_sha256, sha))
        return int(sum(pipe.execute()))

    def fetch_or_compute(
        self,
        weights_sha256: str,
        image_shas: Sequence[str],
        compute: Callable[[list[int]], np.ndarray],
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """``[N, 2048, 7, 7]`` float16: cached maps, and ``compute(missing_positions)`` for the
        rest (stored for next time). ``progress(done, total)`` while reading and per computed
        chunk of 64."""
        found = self.get_many(weights_sha256, image_shas, progress)
        missing = [i for i, m in enumerate(found) if m is None]
        out = np.empty((len(image_shas), *FEATURE_SHAPE), dtype=np.float16)
        for i, m in enumerate(found):
            if m is not None:
                out[i] = m
        if progress is not None:
            progress(len(image_shas) - len(missing), len(image_shas))
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            maps = compute(chunk)
            out[chunk] = maps
            self.put_many(weights_sha256, [image_shas[i] for i in chunk], maps)
            if progress is not None:
                progress(len(image_shas) - len(missing) + start + len(chunk), len(image_shas))
        return out

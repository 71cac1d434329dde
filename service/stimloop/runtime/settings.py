"""Configuration from the environment (``STIMLOOP_`` variables), in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the server and its tools; read from ``STIMLOOP_*`` or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="STIMLOOP_", env_file=".env", extra="ignore")

    models_store: Path = Field(
        default=Path("models_store"),
        description="Folder with backbones.toml, weights/, sessions/ and stimulus_sets/.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the job queue and the activation cache; unset: `stimloop serve` "
        "starts a private one under the models store.",
    )
    key_prefix: str = Field(default="stimloop", description="Prefix of every Redis key and queue.")
    stimulus_root: Path = Field(
        default=Path("stimuli"),
        description="Stimulus directories may only be registered from below this folder.",
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu or cuda.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="Backbone forward: fp32, bf16 or fp16."
    )
    batch_size: int = Field(default=32, ge=1, description="Images per backbone forward.")
    token_file: Path | None = Field(
        default=None, description="Hashed API tokens (default: <models_store>/tokens.json)."
    )
    auth: bool = Field(default=True, description="Require bearer tokens (turn off only for tests).")
    max_upload_bytes: int = Field(
        default=256 * 2**20, ge=1024, description="Largest upload (trials, a zip of images)."
    )
    upload_processes: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Processes that read uploaded trial files, each one upload at a time: a "
        "slow or hostile file holds one of them, never every session's uploads.",
    )
    upload_memory_mib: int = Field(
        default=3072,
        ge=64,
        description="Memory one upload's reading may take beyond its process's imports "
        "(an address-space limit); past it the upload is refused (422) and nothing is stored.",
    )
    upload_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest one upload's reading and storing may take; past it its process "
        "is replaced and the upload refused (422).",
    )
    max_json_bytes: int = Field(
        default=2**20, ge=1024, description="Largest body of every other request."
    )
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=64 * 64, description="Largest stimulus image (width x height)."
    )
    job_timeout_s: int = Field(default=3600, ge=10, description="Longest a job may run.")
    job_stale_s: float = Field(
        default=120.0,
        gt=0,
        description="Lifetime of a running job's heartbeat key, renewed by a thread of its "
        "worker every few seconds: a job whose worker is killed, frozen or cut off from Redis "
        "is reported failed this long after its last beat (progress reports play no part).",
    )
    saliency_cpu_coverage: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Fraction of s the saliency maps cover on a CPU when the request names "
        "none (the fewest top features by beta; each costs a backward pass; a GPU covers all).",
    )
    sanity_cpu_features: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Features per map in the sanity checks on a CPU when the request names "
        "none (each costs a backward pass per map; a GPU maps all of them).",
    )
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8000)

    @field_validator("models_store", "stimulus_root", "token_file", mode="after")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Resolve once, here: no relative path may reach a subprocess or a later ``chdir``."""
        return None if path is None else absolute(path)

    @property
    def registry_path(self) -> Path:
        return self.models_store / "backbones.toml"

    @property
    def weights_dir(self) -> Path:
        return self.models_store / "weights"

    @property
    def sessions_dir(self) -> Path:
        return self.models_store / "sessions"

    @property
    def sets_dir(self) -> Path:
        return self.models_store / "stimulus_sets"

    @property
    def tokens_path(self) -> Path:
        return self.token_file or self.models_store / "tokens.json"


def absolute(path: Path | str) -> Path:
    """``path`` made absolute against the current directory (``~`` expanded, links resolved)."""
    return Path(path).expanduser().resolve()

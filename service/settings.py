"""Configuration from the environment (``STIMLOOP_`` variables), in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the server and its tools; read from ``STIMLOOP_*`` or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="STIMLOOP_", env_file=".env", extra="ignore")

    models_store: Path = Field(
        default=Path("models_store"),
        description="Folder with backbones.toml, weights/ and sessions/.",
    )
    device: Literal["auto", "cpu", "cuda"] | str = Field(
        default="auto", description="Torch device for the backbone: auto picks CUDA when present."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="Backbone forward precision (fp32 as in the paper)."
    )
    batch_size: int = Field(default=32, ge=1, description="Images per backbone forward.")

    @property
    def registry_path(self) -> Path:
        return self.models_store / "backbones.toml"

    @property
    def weights_dir(self) -> Path:
        return self.models_store / "weights"

    @property
    def sessions_dir(self) -> Path:
        return self.models_store / "sessions"


def get_settings() -> Settings:
    return Settings()

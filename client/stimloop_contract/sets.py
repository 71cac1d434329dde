"""Stimulus sets: registering one, and what the service answers about it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from stimloop_contract.ids import Category, Id, Strict


class StimulusSetCreate(Strict):
    """Register the images of a directory below the stimulus root."""

    id: Id = Field(description="Name of the set, e.g. 'bodies_2024'.")
    category: Category
    directory: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]+$",
        description="A folder below the server's stimulus root (relative, no NUL bytes); one "
        "that does not exist there, or leads out of it, is 404 or 403.",
    )


class StimulusSetInfo(BaseModel):
    id: str
    category: str
    count: int
    source: str
    ids: list[str]
    sha256: list[str]

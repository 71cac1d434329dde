"""Identifier patterns shared by every resource; the strict base model (unknown keys refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # sets, channels, backbones: 1-64 characters


# Stimulus ids: 1-128 characters, so every name derived from one (a fragment's id with its
# channel, kind and q; a file name) fits the file system's 255 bytes.
STIMULUS_ID = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$"


CATEGORY = r"^[a-z][a-z0-9_]{0,31}$"


Category = Annotated[
    str,
    Field(
        pattern=CATEGORY,
        description="What a set's images are: body, object, control_body in the paper; any "
        "other (face, scene, ...) as 1-32 lowercase letters, digits and '_'",
        examples=["body", "object", "control_body", "face"],
    ),
]


Id = Annotated[str, Field(pattern=ID)]


StimulusId = Annotated[str, Field(pattern=STIMULUS_ID)]


Role = Literal["rig", "analyst"]


UNIQUE: JsonDict = {"uniqueItems": True}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

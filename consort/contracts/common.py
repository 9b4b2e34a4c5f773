"""Models shared by every service's contract."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelInfo(BaseModel):
    """Which model produced a result: name and version, in every AI response and event."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(examples=["vader"])
    version: str = Field(examples=["3.3.2"])


class FieldProblem(BaseModel):
    """One field-level problem inside a problem+json error."""

    field: str = Field(description="Dotted path of the offending field, e.g. `body.text`.")
    message: str
    limit: int | float | str | None = Field(
        default=None, description="The limit the value broke, where there is one."
    )


class Problem(BaseModel):
    """RFC 9457 problem details, the one error shape of every Consort service."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    trace_id: str | None = None

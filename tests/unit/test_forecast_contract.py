"""The forecast contract: limits and validation, what gives a clear 422 at the service."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consort.contracts.forecast import (
    MAX_HORIZON,
    MAX_POINTS,
    MAX_SERIES,
    ForecastRequest,
    SeriesIn,
)


def series(**overrides: object) -> dict[str, object]:
    return {"id": "a", "values": [1.0, 2.0, 3.0], "horizon": 2} | overrides


def test_defaults() -> None:
    s = SeriesIn.model_validate(series())
    assert s.period == 1 and s.model == "auto" and s.levels == [80, 95]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"values": [1.0, 2.0]}, "at least 3"),
        ({"values": [0.0] * (MAX_POINTS + 1)}, f"at most {MAX_POINTS}"),
        ({"values": [1.0, float("nan"), 2.0]}, "values[1] is not a finite number"),
        ({"values": [1.0, "x", 2.0]}, "valid number"),
        ({"horizon": 0}, "greater than or equal to 1"),
        ({"horizon": MAX_HORIZON + 1}, f"less than or equal to {MAX_HORIZON}"),
        ({"model": "prophet"}, "auto"),
        ({"levels": [100]}, "less than or equal to 99"),
        ({"start": "2024-01-01T00:00:00Z"}, "start and frequency go together"),
        ({"timestamps": ["2024-01-01T00:00:00Z"]}, "one entry per value"),
    ],
)
def test_bad_series_are_refused_with_a_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SeriesIn.model_validate(series(**overrides))


def test_requests_hold_1_to_max_series_with_unique_ids() -> None:
    with pytest.raises(ValidationError):
        ForecastRequest.model_validate({"series": []})
    with pytest.raises(ValidationError):
        ForecastRequest.model_validate(
            {"series": [series(id=str(i)) for i in range(MAX_SERIES + 1)]}
        )
    with pytest.raises(ValidationError, match="unique"):
        ForecastRequest.model_validate({"series": [series(), series()]})

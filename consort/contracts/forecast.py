"""The forecast service's contract: `POST /v1/forecasts`, its results and limits."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consort.contracts.common import ModelInfo

#: Most series in one request.
MAX_SERIES = 100
#: Fewest and most points of one series.
MIN_POINTS = 3
MAX_POINTS = 10_000
#: Longest horizon, in steps of the series.
MAX_HORIZON = 500
#: Longest seasonal period, in steps (weekly seasonality of hourly data is 168).
MAX_PERIOD = 730
#: Interval levels (percent) when a request names none.
DEFAULT_LEVELS = (80, 95)


class ForecastModel(StrEnum):
    """Which model to fit. `auto` is the combination, falling back to what the data allow."""

    AUTO = "auto"
    ETS = "ets"
    THETA = "theta"
    ARIMA = "arima"
    COMBINATION = "combination"


#: A level of a prediction interval, in percent.
Level = Annotated[int, Field(ge=50, le=99)]


class SeriesIn(BaseModel):
    """One series to forecast.

    Points are equally spaced; `timestamps` (one per value) or `start` and `frequency`
    only label the forecast steps, they never change the model.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, examples=["store-7/revenue"])
    values: list[float] = Field(
        min_length=MIN_POINTS,
        max_length=MAX_POINTS,
        description=f"{MIN_POINTS} to {MAX_POINTS} finite numbers, oldest first.",
    )
    timestamps: list[datetime] | None = Field(
        default=None, description="One per value, increasing and equally spaced."
    )
    start: datetime | None = Field(default=None, description="Time of the first value.")
    frequency: str | None = Field(
        default=None,
        max_length=20,
        description="Step between values as a pandas offset alias: `D`, `h`, `MS`, `QS`, `YS`.",
        examples=["MS"],
    )
    period: int = Field(
        default=1,
        ge=1,
        le=MAX_PERIOD,
        description="Seasonal period in steps (12 for monthly data with a yearly cycle); 1: none.",
    )
    horizon: int = Field(ge=1, le=MAX_HORIZON, description=f"Steps ahead, 1 to {MAX_HORIZON}.")
    model: ForecastModel = ForecastModel.AUTO
    levels: list[Level] = Field(
        default_factory=lambda: list(DEFAULT_LEVELS),
        min_length=1,
        max_length=5,
        description="Interval levels in percent, 50 to 99.",
    )

    @field_validator("values")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        for index, value in enumerate(values):
            if not math.isfinite(value):
                raise ValueError(f"values[{index}] is not a finite number")
        return values

    @field_validator("levels")
    @classmethod
    def _distinct(cls, levels: list[int]) -> list[int]:
        return sorted(set(levels))

    @model_validator(mode="after")
    def _labels(self) -> SeriesIn:
        if self.timestamps is not None:
            if len(self.timestamps) != len(self.values):
                raise ValueError("timestamps must have one entry per value")
            if len({t.tzinfo is None for t in self.timestamps}) > 1:
                raise ValueError("timestamps must all have a time zone, or none")
            if any(b <= a for a, b in zip(self.timestamps, self.timestamps[1:], strict=False)):
                raise ValueError("timestamps must increase")
            if self.start is not None:
                raise ValueError("give timestamps or start, not both")
        if (self.start is None) != (self.frequency is None) and self.timestamps is None:
            raise ValueError("start and frequency go together")
        return self


class ForecastRequest(BaseModel):
    """One or many series; they are forecast independently (in parallel, within a bound)."""

    model_config = ConfigDict(extra="forbid")

    series: list[SeriesIn] = Field(min_length=1, max_length=MAX_SERIES)

    @field_validator("series")
    @classmethod
    def _unique_ids(cls, series: list[SeriesIn]) -> list[SeriesIn]:
        ids = [s.id for s in series]
        if len(set(ids)) != len(ids):
            raise ValueError("series ids must be unique within a request")
        return series


class Interval(BaseModel):
    """A prediction interval at one level: a bound per forecast step."""

    level: int = Field(description="Percent, e.g. 95.")
    lower: list[float]
    upper: list[float]


class FittedModel(BaseModel):
    """The model that produced a forecast: its name and a summary of its parameters."""

    name: str = Field(examples=["ETS(M,Ad,M)", "ARIMA(1,1,1)(0,1,1)[12]", "Theta", "Combination"])
    parameters: dict[str, bool | int | float | str | list[int] | list[float]] = Field(
        default_factory=dict, description="Smoothing parameters, orders, coefficients, theta."
    )
    aicc: float | None = Field(default=None, description="Where the model has a likelihood.")
    members: list[FittedModel] = Field(
        default_factory=list, description="For a combination: the models averaged."
    )


class SeriesForecast(BaseModel):
    """The forecast of one series."""

    id: str
    point: list[float] = Field(description="Point forecasts, one per step of the horizon.")
    intervals: list[Interval]
    timestamps: list[datetime] | None = Field(
        default=None, description="Times of the forecast steps, when the request gave them."
    )
    model: FittedModel
    library: ModelInfo = Field(description="The library that fitted the model and its version.")
    seconds: float = Field(description="Time spent fitting and forecasting this series.")


class ForecastResponse(BaseModel):
    """Forecasts in the order of the request's series."""

    forecasts: list[SeriesForecast]

"""Forecast routes: point forecasts with prediction intervals, by the forecast service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from apps.gateway.calls import SidecarDep, relay, settings
from apps.gateway.edge import requires
from consort.contracts.forecast import ForecastRequest, ForecastResponse

router = APIRouter(prefix="/forecasts", tags=["forecasts"], dependencies=[requires("timeseries")])


@router.post("", response_model=ForecastResponse)
async def create_forecasts(request: ForecastRequest, sc: SidecarDep) -> Any:
    """Point forecasts with prediction intervals (80 and 95 % by default) for up to 100
    series: ETS (automatic selection), Theta, ARIMA, or their combination (`auto`)."""
    return await relay(
        sc, settings.forecast_app_id, "v1/forecasts", request, timeout_s=settings.forecast_timeout_s
    )

"""A series' outlook: its forecast beside what the anomaly detector saw, and the alerts
where the forecast crosses its bounds. Pure: the workflow computes it from its activities'
results.

An alert is `critical` when the point forecast crosses a bound, `warning` when only the
95 % interval does (a crossing is plausible, not expected). Either is
`confirmed_by_anomalies` when the detector flagged some of the series' recent points:
the forecast then continues what is already unusual.
"""

from __future__ import annotations

import operator
from datetime import UTC, datetime, timedelta

from consort.contracts.anomaly import SeriesSnapshot
from consort.contracts.forecast import MAX_PERIOD as FORECAST_MAX_PERIOD
from consort.contracts.forecast import MIN_POINTS, SeriesForecast
from consort.contracts.workflows import (
    Alert,
    AlertLevel,
    OutlookStatus,
    RecentScores,
    SeriesHistory,
    SeriesOutlook,
    SeriesWatch,
)

#: How many of the latest points "recent" anomaly scores cover.
RECENT_POINTS = 20
#: The interval level a warning looks at.
WARNING_LEVEL = 95


def history_of(
    snapshot: SeriesSnapshot, max_points: int, recent: int = RECENT_POINTS
) -> SeriesHistory:
    """The part of a series' snapshot a forecast needs: its latest values, its spacing
    and period, and a summary of its latest scores."""
    points = snapshot.points[-max_points:]
    if not points:
        return SeriesHistory(series=snapshot.series, found=True)
    latest = snapshot.scores[-recent:]
    scored = [abs(s.score) for s in latest if s.score is not None]
    last = points[-1]
    return SeriesHistory(
        series=snapshot.series,
        found=True,
        values=[p.value for p in points],
        period=min(max(snapshot.config.period, 1), FORECAST_MAX_PERIOD),
        step_s=snapshot.config.step_s,
        recent=RecentScores(
            points=len(points),
            recent=len(latest),
            anomalies=sum(1 for s in latest if s.is_anomaly),
            max_abs_score=round(max(scored), 4) if scored else None,
            threshold=snapshot.config.z_threshold,
            last_timestamp=last.timestamp.astimezone(UTC),
            last_value=last.value,
        ),
    )


def can_forecast(history: SeriesHistory) -> bool:
    return history.found and len(history.values) >= MIN_POINTS


def step_times(history: SeriesHistory, horizon: int) -> list[datetime]:
    """When each forecast step falls: the last point, plus one spacing a step."""
    if history.recent is None or history.step_s is None:
        return []
    step = timedelta(seconds=history.step_s)
    return [history.recent.last_timestamp + step * k for k in range(1, horizon + 1)]


def alerts(
    watch: SeriesWatch, forecast: SeriesForecast, times: list[datetime], recent: RecentScores | None
) -> list[Alert]:
    """The first crossing of each bound, if any: by the point forecast (critical), else
    by the 95 % interval (warning)."""
    confirmed = recent is not None and recent.anomalies > 0
    interval = next((i for i in forecast.intervals if i.level == WARNING_LEVEL), None)
    found: list[Alert] = []
    for bound, limit, crosses, edge in (
        ("upper", watch.upper, operator.gt, interval.upper if interval else None),
        ("lower", watch.lower, operator.lt, interval.lower if interval else None),
    ):
        if limit is None:
            continue
        for level, values in ((AlertLevel.CRITICAL, forecast.point), (AlertLevel.WARNING, edge)):
            if values is None:
                continue
            step = next((k for k, v in enumerate(values) if crosses(v, limit)), None)
            if step is None:
                continue
            found.append(
                Alert(
                    bound=bound,
                    limit=limit,
                    level=level,
                    step=step + 1,
                    at=times[step] if step < len(times) else None,
                    value=values[step],
                    confirmed_by_anomalies=confirmed,
                )
            )
            break
    return found


def outlook(
    run_id: str,
    watch: SeriesWatch,
    history: SeriesHistory,
    forecast: SeriesForecast | None,
    horizon: int,
    generated_at: datetime,
) -> SeriesOutlook:
    """The outlook of one series (the `forecasts.published` payload)."""
    base = SeriesOutlook(
        run_id=run_id,
        series=watch.series,
        status=OutlookStatus.FORECAST,
        generated_at=generated_at,
        horizon=horizon,
        step_s=history.step_s,
        recent=history.recent,
        upper=watch.upper,
        lower=watch.lower,
    )
    if not history.found:
        return base.model_copy(update={"status": OutlookStatus.UNKNOWN_SERIES})
    if forecast is None:
        return base.model_copy(update={"status": OutlookStatus.INSUFFICIENT_DATA})
    times = step_times(history, horizon)
    return base.model_copy(
        update={
            "timestamps": times,
            "point": forecast.point,
            "intervals": forecast.intervals,
            "model": forecast.model.name,
            "alerts": alerts(watch, forecast, times, history.recent),
        }
    )

"""The forecast service: point forecasts and intervals with ETS, Theta, ARIMA and their mean."""

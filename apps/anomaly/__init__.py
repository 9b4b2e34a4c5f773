"""The anomaly service: online, seasonality-aware anomaly scoring of metric series."""

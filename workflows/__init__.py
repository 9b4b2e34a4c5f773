"""Durable workflows of the orchestrator, one workflow a module, with their activities.

Each workflow module has a `register(runtime, services, policy)` that registers its
workflow and activities under explicit names; `services` is how activities reach the
other services (through the orchestrator's sidecar). The pure decisions the workflows
make live apart: `complaints` (is a review a complaint?) and `outlooks` (does a forecast
cross its bounds?).
"""

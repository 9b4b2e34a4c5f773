"""Durable workflows of the orchestrator, one workflow a module, with their activities.

In each workflow module the workflow and its activities are module-level functions under
explicit names (the strings running instances are recorded under). What they depend on
is set by the module's `configure(services, policy, ...)`, which `register(runtime, ...)`
calls before registering them; `services` is how activities reach the other services
(through the orchestrator's sidecar), so a test configures a fake and calls them directly.
The pure decisions the workflows make live apart: `complaints` (is a review a
complaint?) and `outlooks` (does a forecast cross its bounds?).
"""

"""The local launcher and the `consort` CLI: run, stop, serve, status, workflows.

Used by developers, the test harness and the benchmarks; no app imports it.
"""

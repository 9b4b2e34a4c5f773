"""The service kit: what every app imports (bootstrap, sidecar client, errors, events, settings).

Apps import only `consort.kit` and `consort.contracts`; `consort.dev` is the local launcher
and CLI, `consort.governance` the contract checks CI runs.
"""

"""Kubernetes deployment, generated from the sources `make run` uses.

`consort k8s render` writes `deploy/` (manifests per environment and the Dockerfile) from
`dapr.yaml`, `consort.yaml`, `components/` and the code's declared subscriptions and state
use; `consort k8s check` fails when the committed files drift from that, when a manifest
does not validate against the pinned Kubernetes, Dapr and KEDA schemas, or when a Dapr
policy does not hold (docs/kubernetes.md).
"""

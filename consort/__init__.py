"""Consort's shared kit: contracts, the service bootstrap, Dapr helpers and the CLI."""

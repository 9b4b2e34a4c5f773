"""Dapr actor types: each interface apart from its implementation."""

"""Peers of Consort for bench/peer.py: the in-process monolith and the Ray Serve app."""

"""Request, response and event models: the one place every service's contract lives.

Producers and consumers import these models; the language-neutral contract (OpenAPI, JSON
Schema of events) is generated from them.
"""

"""The sidecar client's connection pools, against a local HTTP server standing in for the
far end of the socket (the kit's HTTP client, not Dapr, is under test here; the same
behaviour through real sidecars is in tests/integration/test_anomaly.py).

An actor method call waits on this app: daprd calls the actor's method here, and the
method calls the sidecar in turn (its state). Many such calls at once must not hold every
pooled connection while the methods they wait on queue for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from consort.kit.dapr import Sidecar, SidecarError
from consort.kit.settings import SidecarSettings

#: More calls at once than the pool for the sidecar's own answers holds (64).
BURST = 100


@asynccontextmanager
async def sidecar_that_calls_back() -> AsyncIterator[tuple[Sidecar, dict[str, int]]]:
    """A server on loopback: an actor method there answers only after its actor's state
    was read through the same client, as an actor hosted by this app would."""
    seen = {"methods": 0, "states": 0, "most_at_once": 0}
    in_method = 0
    holder: dict[str, Sidecar] = {}

    async def method(request: web.Request) -> web.Response:
        nonlocal in_method
        in_method += 1
        seen["methods"] += 1
        seen["most_at_once"] = max(seen["most_at_once"], in_method)
        try:
            # Wait until the burst is all in flight, as queued calls would be, then read
            # this actor's state through the client (the hosted actor's own call).
            for _ in range(100):
                if in_method >= BURST:
                    break
                await asyncio.sleep(0.01)
            actor = request.match_info["id"]
            state = await holder["sidecar"].actor_api("GET", "T", actor, "state/k", None)
        finally:
            in_method -= 1
        return web.json_response({"actor": actor, "state": state.decode()})

    async def state(request: web.Request) -> web.Response:
        seen["states"] += 1
        return web.Response(text=f"state of {request.match_info['id']}")

    app = web.Application()
    app.router.add_post("/v1.0/actors/T/{id}/method/M", method)
    app.router.add_get("/v1.0/actors/T/{id}/state/k", state)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sidecar = Sidecar(SidecarSettings(http_port=port), timeout_s=10)
    holder["sidecar"] = sidecar
    try:
        yield sidecar, seen
    finally:
        await sidecar.aclose()
        await runner.cleanup()


def test_a_burst_of_actor_calls_does_not_starve_the_methods_it_waits_on() -> None:
    async def scenario() -> tuple[list[object], dict[str, int]]:
        async with sidecar_that_calls_back() as (sidecar, seen):
            calls = [sidecar.invoke_actor("T", f"a{i}", "M") for i in range(BURST)]
            results = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), timeout=30
            )
            return results, seen

    results, seen = asyncio.run(scenario())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {BURST} failed, first: {failures[0]!r}"
    assert sorted(r["actor"] for r in results) == sorted(f"a{i}" for i in range(BURST))  # type: ignore[index]
    assert all(r["state"] == f"state of {r['actor']}" for r in results)  # type: ignore[index]
    # The whole burst was in flight at once (none queued behind the pool's bound).
    assert seen["most_at_once"] == BURST, seen
    assert seen["states"] == BURST


def test_an_error_from_an_actor_method_is_still_the_callers_error() -> None:
    async def scenario() -> BaseException | None:
        async with sidecar_that_calls_back() as (sidecar, _):
            try:
                await sidecar.invoke_actor("T", "a", "Unknown")
            except SidecarError as exc:
                return exc
            return None

    error = asyncio.run(scenario())
    assert isinstance(error, SidecarError) and error.status == 404, error

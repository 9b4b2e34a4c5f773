"""A caller's mistake crosses the sidecars as an answer, so that it trips no circuit breaker.

Dapr 1.18's circuit breaker counts every reply of an invoked app outside 200-399 as a
failure: daprd turns it into an error before the breaker sees it, over HTTP and gRPC
alike. The resiliency spec can narrow retries to status codes (`matching`), not breakers:
a breaker's `trip` expression sees only counts. Five bad images in a row (each a correct
415 or 422) would then open the breaker of the vision route for every caller.

So a Consort caller (`Sidecar.invoke`) asks for caller faults in band with a request
header; the app (this middleware, in every app the kit builds) answers such a fault as
200 with the real status in `consort-status`, the problem+json body unchanged; and the
caller's kit restores the status before anyone reads it. Daprd then counts only the
service's own faults: timeouts, 5xx, unreachable targets, and 408/429 (overload). A client
calling the app without the header (curl, another runtime) gets the real status.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Request header: answer caller faults in band (its one value is `IN_BAND`).
CALLER_FAULTS_HEADER = "consort-caller-faults"
IN_BAND = "in-band"
#: Response header: the status the app meant, where it answered 200 in band.
STATUS_HEADER = "consort-status"
#: 4xx that say the service is overloaded or too slow: the service's own faults.
_SERVICE_4XX = frozenset({408, 429})


def is_caller_fault(status: int) -> bool:
    """True for a status that says the request was wrong, not the service."""
    return 400 <= status < 500 and status not in _SERVICE_4XX


class CallerFaultsInBand:
    """Answer a caller fault as 200 + `consort-status` when the request asks for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        if headers.get(CALLER_FAULTS_HEADER.encode()) != IN_BAND.encode():
            await self.app(scope, receive, send)
            return

        async def send_in_band(message: Message) -> None:
            if message["type"] == "http.response.start" and is_caller_fault(message["status"]):
                status = message["status"]
                message = {
                    **message,
                    "status": 200,
                    "headers": [
                        *message.get("headers", []),
                        (STATUS_HEADER.encode(), str(status).encode()),
                    ],
                }
            await send(message)

        await self.app(scope, receive, send_in_band)


def restored_status(status: int, headers: dict[str, str]) -> int:
    """The status an app meant: its `consort-status` when it answered in band.

    Args:
        status: the status as it arrived through the sidecars.
        headers: the reply's headers, names in lower case.
    """
    meant = headers.get(STATUS_HEADER, "")
    if status == 200 and meant.isdigit() and is_caller_fault(int(meant)):
        return int(meant)
    return status

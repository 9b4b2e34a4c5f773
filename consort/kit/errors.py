"""Errors as data: every Consort service answers failures in one problem+json shape.

`install_problem_handlers` maps validation errors, HTTP errors, oversized bodies and
unexpected exceptions to `consort.contracts.common.Problem`, naming the field and the limit
and carrying the trace id so a user can go from an error to its trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consort.contracts.common import FieldProblem, Problem
from consort.kit.dapr import SidecarError
from consort.kit.logging import trace_id_var

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


class ProblemError(Exception):
    """Raise to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        slug: str | None = None,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug
        self.errors = errors
        self.headers = headers

    def response(self, request_path: str) -> JSONResponse:
        """This problem as the problem+json answer to the request at `request_path`
        (for exception handlers, which return rather than raise)."""
        return problem_response(
            request_path,
            self.status,
            self.title,
            self.detail,
            slug=self.slug,
            errors=self.errors,
            headers=self.headers,
        )


def invalid_field(
    field: str,
    message: str,
    *,
    detail: str | None = None,
    limit: Any = None,
) -> ProblemError:
    """The 422 problem of one field that breaks the contract, to raise.

    Args:
        field: where, as the validation errors name it (`body.series.frequency`, `k`).
        message: what is wrong with it, naming the limit (`must be at most 50`).
        detail: the sentence for the whole problem; `<field> <message>` when omitted.
        limit: the limit itself, for clients that read it (`FieldProblem.limit`).
    """
    return ProblemError(
        422,
        "Invalid request",
        detail or f"{field} {message}",
        slug="validation-error",
        errors=[FieldProblem(field=field, message=message, limit=limit)],
    )


def unavailable(
    title: str,
    detail: str,
    *,
    slug: str = "service-unavailable",
    retry_after_s: int = 2,
) -> ProblemError:
    """A 503 problem with `Retry-After`, to raise: the service (or what it needs) is not
    able to answer now, and the same request may succeed later.

    Args:
        title: the short title (`Model not ready`, `Restarting`).
        detail: what happened and what to do.
        slug: the problem type's last part (`urn:consort:problem:<slug>`).
        retry_after_s: the seconds a client should wait before retrying.
    """
    return ProblemError(503, title, detail, slug=slug, headers={"Retry-After": str(retry_after_s)})


def problem_type(slug: str | None) -> str:
    """The `type` URI of a Consort problem."""
    return f"urn:consort:problem:{slug}" if slug else "about:blank"


def problem_response(
    request_path: str,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    slug: str | None = None,
    errors: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build a problem+json response for the request at `request_path`."""
    body = Problem(
        type=problem_type(slug),
        title=title,
        status=status,
        detail=detail,
        instance=request_path,
        errors=errors,
        trace_id=trace_id_var.get(),
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


# Pydantic error types whose context names a limit, and the context key holding it.
_LIMIT_KEYS: dict[str, tuple[str, str]] = {
    "string_too_long": ("max_length", "must be at most {} characters"),
    "string_too_short": ("min_length", "must be at least {} characters"),
    "too_long": ("max_length", "must have at most {} items"),
    "too_short": ("min_length", "must have at least {} items"),
    "less_than_equal": ("le", "must be at most {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "greater_than": ("gt", "must be greater than {}"),
}


_TYPE_NAMES = {
    "string_type": "a string",
    "list_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "model_attributes_type": "a JSON object",
    "dict_type": "a JSON object",
}


def field_problems(errors: Sequence[Any]) -> list[FieldProblem]:
    """Turn pydantic/FastAPI validation errors into field problems with their limits."""
    problems = []
    for err in errors:
        loc = ".".join(str(part) for part in err.get("loc", ()))
        kind = err.get("type", "")
        ctx = err.get("ctx") or {}
        limit: int | float | str | None = None
        message = err.get("msg", "is invalid")
        if kind in _LIMIT_KEYS:
            key, template = _LIMIT_KEYS[kind]
            limit = ctx.get(key)
            message = template.format(limit)
        elif kind == "string_pattern_mismatch":
            message = "must contain at least one character that is not white space"
        elif kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = "is not a known field"
        elif kind in _TYPE_NAMES:
            message = f"must be {_TYPE_NAMES[kind]}"
        problems.append(FieldProblem(field=loc or "body", message=message, limit=limit))
    return problems


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    path = request.url.path
    content_type = request.headers.get("content-type", "")
    if any(e.get("loc", ("",))[0] == "body" for e in errors) and (
        content_type and not _is_json(content_type)
    ):
        return problem_response(
            path,
            415,
            "Unsupported media type",
            f"The body must be JSON (Content-Type: application/json), not {content_type!r}.",
            slug="unsupported-media-type",
        )
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e for e in errors if e.get("type") == "json_invalid")
        detail = (where.get("ctx") or {}).get("error", "the body could not be parsed")
        return problem_response(
            path,
            400,
            "Malformed JSON",
            f"The body is not valid JSON: {detail}.",
            slug="malformed-json",
        )
    problems = field_problems(errors)
    summary = "; ".join(f"{p.field} {p.message}" for p in problems)
    return problem_response(
        path, 422, "Invalid request", summary, slug="validation-error", errors=problems
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return exc.response(request.url.path)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        request.url.path, exc.status_code, title, detail, headers=getattr(exc, "headers", None)
    )


def unexpected_error_response(path: str) -> JSONResponse:
    """The 500 problem of an unexpected failure: no internals, the trace id to find them."""
    return problem_response(
        path,
        500,
        "Internal error",
        "The service failed unexpectedly; the trace id identifies the failure in the logs.",
        slug="internal-error",
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return unexpected_error_response(request.url.path)


async def _on_sidecar_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("sidecar failure on %s: %s", request.url.path, exc)
    return unavailable(
        "Service unavailable",
        "A building block this service depends on (its Dapr sidecar, the state store or "
        "the broker) did not answer; try again shortly.",
    ).response(request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as problem+json."""
    app.add_exception_handler(SidecarError, _on_sidecar_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, by header or while streaming.

    `limits` raises (or lowers) the limit for paths under given prefixes, e.g. image
    uploads; the longest matching prefix wins.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_max = max_bytes
        self.limits = sorted((limits or {}).items(), key=lambda kv: -len(kv[0]))

    def _limit_for(self, path: str) -> int:
        return next((n for prefix, n in self.limits if path.startswith(prefix)), self.default_max)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit_for(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(scope, send, max_bytes)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Frameworks may turn the receive error into a response of their own (FastAPI
            # answers 400); once the limit is broken only the 413 goes out.
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if too_large:
            await self._refuse(scope, send, max_bytes)

    async def _refuse(self, scope: Scope, send: Send, max_bytes: int) -> None:
        response = problem_response(
            scope.get("path", ""),
            413,
            "Request body too large",
            f"The body must be at most {max_bytes} bytes.",
            slug="body-too-large",
            errors=[
                FieldProblem(
                    field="body",
                    message=f"must be at most {max_bytes} bytes",
                    limit=max_bytes,
                )
            ],
        )
        await response(scope, _no_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}

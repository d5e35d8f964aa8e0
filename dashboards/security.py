"""The live dashboard's gate: a Host check, a token on every request, and no leaking referrer.

Every response carries ``Referrer-Policy: no-referrer``. Each request, in order:

1. **Host.** Its ``Host`` header must name this dashboard: ``127.0.0.1``, ``localhost``,
   ``::1``, the ``--host`` it was bound to (for a wildcard bind, this machine's host
   names), or an ``--allow-host`` name. Anything else gets 403: a DNS-rebinding page
   (``evil.example`` resolved to 127.0.0.1) sends its own name.
2. **Token.** There always is one (:func:`resolve_token`; generated when none is given).
   A request must carry it as ``Authorization: Bearer T``, as the HttpOnly cookie, or once
   as ``?token=T``; else 401.
3. **Token in the URL.** A request that carried it as ``?token=T`` gets the cookie
   (HttpOnly, SameSite=Strict, named after the port: cookies ignore ports) and a page that
   replaces the address with the same URL without the token. The page navigates itself,
   so the Strict cookie is sent even when the link was opened from another site.
"""
from __future__ import annotations

import hmac
import html
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Iterable

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse

from convopt_mlflow.errors import UserError

__all__ = ["LOCAL_HOSTS", "TOKEN_ENV", "Gate", "allowed_hosts", "cookie_name", "host_name", "resolve_token"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
TOKEN_ENV = "CONVOPT_DASHBOARD_TOKEN"
_HEADERS = [(b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff")]


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without port, brackets or a final dot.

    Example:
        >>> host_name("[::1]:8050"), host_name("LocalHost.:8050"), host_name("10.0.0.5")
        ('::1', 'localhost', '10.0.0.5')
    """
    text = header.strip().lower()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` names a dashboard bound to ``host`` answers: the local names, ``host``, ``extra``.

    A wildcard bind (``0.0.0.0``, ``::``) adds this machine's host name and FQDN.
    """
    names = {*LOCAL_HOSTS, host_name(host), *(host_name(e) for e in extra if e.strip())}
    if host.strip() in WILDCARD_BINDS:
        names |= {host_name(socket.gethostname()), host_name(socket.getfqdn())}
    return frozenset(n for n in names if n and n not in WILDCARD_BINDS)


def resolve_token(token: str | None = None, token_file: str | None = None) -> tuple[str, str]:
    """``(token, where it came from)``: ``--token-file``, else ``$CONVOPT_DASHBOARD_TOKEN``, else
    ``--token`` (warned: ``ps`` shows it), else a fresh ``secrets.token_urlsafe(32)``.

    Raises:
        UserError: an unreadable or empty token file.
    """
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read --token-file {token_file}: {exc.strerror or exc}") from None
        if not text:
            raise UserError(f"--token-file {token_file} is empty: write the token into it, or leave the option "
                            f"out to get a generated one")
        return text, "file"
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip(), "environment"
    if token:
        print(f"convopt dashboard: warning: --token is visible to every local user in `ps`; put it in "
              f"${TOKEN_ENV} or --token-file instead", file=sys.stderr, flush=True)
        return token, "argument"
    return secrets.token_urlsafe(32), "generated"


def cookie_name(port: int | None) -> str:
    return f"convopt_dashboard_{port or 0}"


def _with_headers(send):
    async def send_with_headers(message):
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *_HEADERS]
        await send(message)
    return send_with_headers


def _strip_page(request: Request) -> HTMLResponse:
    """Set nothing itself; a page that replaces its own address with the URL minus ``token``."""
    url = request.url.remove_query_params("token")
    target = url.path + (f"?{url.query}" if url.query else "")
    body = (f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={html.escape(target)}">'
            f"<title>convopt dashboard</title><script>location.replace({json.dumps(target)})</script>"
            f'<p><a href="{html.escape(target)}">continue</a></p>')
    return HTMLResponse(body, headers={"cache-control": "no-store"})


class Gate:
    """ASGI middleware: 403 for a foreign ``Host``, 401 without the token; see the module doc."""

    def __init__(self, app, token: str, hosts: frozenset[str]):
        if not token:
            raise ValueError("the dashboard always needs a token")
        self.app, self.token, self.hosts = app, token.encode(), hosts

    def _valid(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _with_headers(send)
        request = Request(scope)
        if host_name(request.headers.get("host", "")) not in self.hosts:
            return await PlainTextResponse(
                "403: unknown Host header; this dashboard answers only to "
                f"{', '.join(sorted(self.hosts))} (start it with --allow-host NAME to add one)",
                status_code=403)(scope, receive, send)
        name = cookie_name((scope.get("server") or (None, None))[1])
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        in_url = request.query_params.get("token")
        if not any(self._valid(given) for given in (bearer, request.cookies.get(name), in_url)):
            return await PlainTextResponse("401: this dashboard needs its token: open the URL it printed "
                                           "(.../?token=...) once, or send Authorization: Bearer <token>",
                                           status_code=401)(scope, receive, send)
        if in_url is not None:  # never leave the token in an address bar, a history entry or a log
            response = _strip_page(request)
            if self._valid(in_url):
                response.set_cookie(name, in_url, httponly=True, samesite="strict", path="/")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

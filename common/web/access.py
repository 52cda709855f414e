"""Who may use `clafed serve`, and what a request may carry.

- Bound to anything but loopback, every request needs the access token (generated and printed at
  start, or CLAFED_SERVE_TOKEN): `Authorization: Bearer TOKEN`, or the link `/?token=TOKEN` once,
  which sets an HttpOnly, SameSite=Strict cookie and drops the token from the address bar.
- The Host header must name this server (loopback names, the bound address, --allowed-host), so
  a web page elsewhere cannot reach a loopback server through DNS rebinding.
- A POST must say how long it is and stay under the upload limit, and must be JSON: a form on
  another site cannot send JSON without a CORS preflight, which this app never answers.
- With --tls-cert the cookie is marked Secure (sent over HTTPS only).
- Every response forbids framing, inline scripts, other origins and caching (pages show patients).
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

TOKEN_ENV = "CLAFED_SERVE_TOKEN"
COOKIE = "clafed_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIN_TOKEN_LENGTH = 16
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; "
                                "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                                "form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class AccessError(ValueError):
    """The access settings cannot be used (e.g. a token too short to be secret)."""


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The token (None: loopback without one), the Host names accepted, the POST size limit."""

    token: str | None
    allowed_hosts: frozenset[str]
    max_body_bytes: int
    secure: bool = False  # served over TLS: the cookie is sent over HTTPS only

    @classmethod
    def for_host(cls, host: str, max_body_bytes: int, extra_hosts: tuple[str, ...] = (),
                 token: str | None = None, secure: bool = False) -> "Access":
        """The policy for a server bound to `host`: a token is required off loopback (from the
        argument, else CLAFED_SERVE_TOKEN, else a new random one)."""
        token = token or os.environ.get(TOKEN_ENV) or None
        if token is None and not is_loopback(host):
            token = secrets.token_urlsafe(24)
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise AccessError(f"the access token must have at least {MIN_TOKEN_LENGTH} characters "
                              f"({TOKEN_ENV} or --token)")
        hosts = {h.lower().strip("[]") for h in (*LOOPBACK_NAMES, host, *extra_hosts) if h and h not in ("0.0.0.0", "::")}
        return cls(token, frozenset(hosts), max_body_bytes, secure)

    def link(self, base: str) -> str:
        """The address to open: with the token once, when one is required."""
        return f"{base}/?{urlencode({'token': self.token})}" if self.token else f"{base}/"

    def host_allowed(self, header: str | None) -> bool:
        name = urlsplit(f"//{header}").hostname if header else None  # drops the port and IPv6 brackets
        return name is not None and name in self.allowed_hosts

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, request: Request, call_next) -> Response:
        """The middleware: host, token, request shape, then the security headers on the answer."""
        response = self._refusal(request)
        if response is None:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():  # a route may set a stricter or looser policy of its own
            response.headers.setdefault(name, value)
        return response

    def _refusal(self, request: Request) -> Response | None:
        if not self.host_allowed(request.headers.get("host")):
            return PlainTextResponse("unknown Host: open this server by the address `clafed serve` printed", 400)
        if self.token is not None and "token" in request.query_params and request.method == "GET":
            given = request.query_params["token"]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return PlainTextResponse("wrong access token", 401)
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            redirect = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
            redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/", secure=self.secure)
            return redirect
        if not self.authorised(request):
            return PlainTextResponse("this server needs its access token: open the link `clafed serve` printed "
                                     "(or send Authorization: Bearer TOKEN)", 401)
        if request.method == "POST":
            return _body_refusal(request, self.max_body_bytes)
        return None


def _body_refusal(request: Request, limit: int) -> Response | None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return JSONResponse({"error": "a request body needs a Content-Length"}, 411)
    if int(length) > limit:
        return JSONResponse({"error": f"upload of {int(length):,} bytes is larger than the limit of {limit:,} "
                                      "(clafed serve --max-upload-mb)"}, 413)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "send the request as application/json"}, 415)
    return None

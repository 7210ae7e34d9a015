"""
Who may reach a session: the one access check of every session-scoped
endpoint, whichever layer serves it.

Under `ATTACHMENTS_ACCESS_POLICY = "token"` (the default) a request reaches
a session with any one of:

- the session's secret token (returned once, when the session is created),
  as `Authorization: Bearer <token>` or a `token` query parameter;
- a signed-in Django user who owns the session, or any staff user (session
  cookie; unsafe methods need the CSRF header, WebSockets a same-origin Origin);
- an internal JWT (HS256, `ATTACHMENTS_JWT_SECRET`, `exp` required) whose
  `sessions` list or `sid` claim names the session, in the same places as a token;
- a signed link's `sig`, only on the one URL it was made for (see `links`).

Under `"open"` the session id alone is enough. Anything else gets exactly the
404 `session_not_found` that an unknown or purged session gets, so session ids
cannot be probed; a malformed id is still 400 `invalid_session_id`.

Entry points, one per layer, all ending in `session_for()`:

- `authorize_request(request, session_id)`: DRF and plain Django views
  (`aauthorize_request` for async views);
- `authorize_scope(scope, session_id)`: ASGI middlewares that run before
  Django (HTTP scopes) and Channels consumers (WebSocket scopes).
- `authorize_scopes_sync(requests)`: many scopes at once, one query for
  their sessions (the event feed's live clients, `artifacts.authorization`).
"""

from __future__ import annotations

import copy
import functools
import hmac
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

import jwt
from channels.db import database_sync_to_async
from django.apps import apps
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, QueryDict
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import MultiValueDict
from django.utils.http import is_same_domain
from rest_framework.authentication import BaseAuthentication

from . import links, statements
from .conf import conf
from .exceptions import CsrfFailed, SessionNotFound
from .identifiers import hash_token
from .models import Session
from .sessions import validate_session_id

OPEN = "open"
TOKEN = "token"
TOKEN_PARAM = "token"
JWT_ALGORITHM = "HS256"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(frozen=True)
class Credentials:
    """What a request presents. Nothing in it has been checked against a session yet."""

    bearer: str | None = None  # a session token or a JWT
    user: Any = None  # an authenticated, active user whose request passed CSRF
    signature: str | None = None  # a signed link's `sig`
    # A signed-in browser's unsafe request failed CSRF, so its user was dropped.
    csrf_failed: bool = False


# Checking what is presented


def token_matches(session: Session, token: str) -> bool:
    if not session.token_hash:
        return False
    return hmac.compare_digest(session.token_hash, hash_token(token))


def jwt_sessions(token: str) -> frozenset[str]:
    """
    The session ids an internal JWT grants (`sessions` list, or `sid`), or
    nothing if JWTs are off or this one is malformed, forged or expired.
    """
    secret = conf.JWT_SECRET
    if secret is None or token.count(".") != 2:
        return frozenset()
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=conf.JWT_ISSUER,
            audience=conf.JWT_AUDIENCE,
            options={"require": ["exp"], "verify_aud": conf.JWT_AUDIENCE is not None},
        )
    except jwt.PyJWTError:
        return frozenset()
    granted = claims.get("sessions", [])
    if not isinstance(granted, list):
        granted = []
    if "sid" in claims:
        granted = [*granted, claims["sid"]]
    return frozenset(value for value in granted if isinstance(value, str))


def is_staff(user: Any) -> bool:
    return bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))


def may_reach(
    credentials: Credentials, session: Session, target: links.LinkTarget | None = None
) -> bool:
    """
    Whether `credentials` reach `session` (a live one). `target` names what
    the request opens, for endpoints that accept a signed link.
    """
    if conf.ACCESS_POLICY == OPEN:
        return True
    user = credentials.user
    if user is not None and (is_staff(user) or session.owner_id == user.pk):
        return True
    bearer = credentials.bearer
    if bearer is not None and (
        token_matches(session, bearer) or session.session_id in jwt_sessions(bearer)
    ):
        return True
    return (
        target is not None
        and credentials.signature is not None
        and target.session_id == session.session_id
        and links.is_valid(credentials.signature, target)
    )


def session_for(
    credentials: Credentials, session_id: object, target: links.LinkTarget | None = None
) -> Session:
    """
    The live session `session_id` if `credentials` reach it. Raises
    `InvalidSessionId` (400) for a malformed id, and `SessionNotFound` (404)
    alike for a session that does not exist, was purged, or is not theirs;
    `CsrfFailed` (403) instead of that 404 when a signed-in browser's unsafe
    request lacked its CSRF token and presented nothing else.
    """
    valid_id = validate_session_id(session_id)
    return _reached(credentials, _live_session(valid_id), target)


def _live_session(session_id: str) -> Session | None:
    """The live session `session_id`, or None: every session-scoped request's one query."""
    if not statements.raw_statements():
        return Session.objects.live().filter(session_id=session_id).first()
    with connection.cursor() as cursor:
        cursor.execute(_live_session_statement(connection.vendor), [session_id])
        row = cursor.fetchone()
    return None if row is None else statements.from_row(Session, row)


# Written once per database vendor: the ORM compiled it for every request,
# which cost more than running it.
@functools.cache
def _live_session_statement(vendor: str) -> str:
    columns, _fields = statements.select_list(vendor, Session)
    table, session_id, purged_at = statements.quoted_names(Session, "session_id", "purged_at")
    # session_id is unique: no ordering or limit to add.
    return f"SELECT {columns} FROM {table} WHERE {session_id} = %s AND {purged_at} IS NULL"


def _reached(
    credentials: Credentials, session: Session | None, target: links.LinkTarget | None
) -> Session:
    """`session_for()`'s verdict on the live session it found (None: none)."""
    if session is not None and may_reach(credentials, session, target):
        return session
    if credentials.csrf_failed and credentials.bearer is None:
        raise CsrfFailed()
    raise SessionNotFound()


asession_for = database_sync_to_async(session_for)


def may_propose_session_id(credentials: Credentials, session_id: str) -> bool:
    """
    Whether a caller may create a session under an id of its own choosing.
    Under the token policy only an authenticated caller may: a signed-in
    user, or the bearer of a JWT that names that id. Anyone else could tell
    from 201 versus 409 whether an id exists, which nothing else reveals.
    """
    if conf.ACCESS_POLICY == OPEN:
        return True
    if credentials.user is not None:
        return True
    return credentials.bearer is not None and session_id in jwt_sessions(credentials.bearer)


def owner_for_new_session(credentials: Credentials) -> Any:
    """The user a session created with `credentials` belongs to, or None (anonymous)."""
    if credentials.csrf_failed and credentials.bearer is None:
        raise CsrfFailed()
    return credentials.user


# Reading credentials


def credentials_from_request(request: HttpRequest | Any) -> Credentials:
    """
    The credentials of a Django request (or a DRF `Request`): the bearer from
    `Authorization` or `?token=`, `?sig=`, and `request.user` if signed in.
    A signed-in user counts only if an unsafe method passed the CSRF check
    (the token read from the `X-CSRFToken` header, never from the body).
    """
    request = getattr(request, "_request", request)
    user = _authenticated(getattr(request, "user", None))
    csrf_failed = False
    if user is not None and request.method not in SAFE_METHODS and not _csrf_passes(request):
        user, csrf_failed = None, True
    return Credentials(
        bearer=_bearer(request.META.get("HTTP_AUTHORIZATION", ""))
        or request.GET.get(TOKEN_PARAM)
        or None,
        user=user,
        signature=request.GET.get(links.SIGNATURE_PARAM) or None,
        csrf_failed=csrf_failed,
    )


async def credentials_from_scope(scope: dict[str, Any]) -> Credentials:
    """
    The credentials of an ASGI HTTP or WebSocket scope, before Django has seen
    the request: the same rules as `credentials_from_request`. The user is
    `scope["user"]` where Channels' `AuthMiddlewareStack` set it, else the one
    the session cookie names. A WebSocket's user counts only if its Origin is
    this site's (or in CSRF_TRUSTED_ORIGINS): browsers send cookies on
    cross-site WebSocket handshakes.
    """
    return await database_sync_to_async(_credentials_from_scope)(scope)


def _credentials_from_scope(scope: dict[str, Any]) -> Credentials:
    request = request_from_scope(scope)
    if "user" in scope:
        request.user = scope["user"]
    else:
        _attach_user(request)
    if scope["type"] == "websocket":
        credentials = credentials_from_request(request)
        if credentials.user is not None and not _same_origin(request):
            return Credentials(credentials.bearer, None, credentials.signature)
        return credentials
    return credentials_from_request(request)


def request_from_scope(scope: dict[str, Any]) -> HttpRequest:
    """
    A body-less Django request with the scope's path, query and headers, for
    checks that run before Django (the body is not read, and stays unread).
    """
    is_websocket = scope["type"] == "websocket"
    headers = [
        (name, value)
        for name, value in scope.get("headers", [])
        if name.lower() != b"content-length"
    ]
    scheme = scope.get("scheme") or ("ws" if is_websocket else "http")
    http_scope = {
        **scope,
        "type": "http",
        "method": "GET" if is_websocket else scope["method"],
        "scheme": {"ws": "http", "wss": "https"}.get(scheme, scheme),
        "headers": [*headers, (b"content-length", b"0")],
    }
    return ASGIRequest(http_scope, io.BytesIO())


def _authorize_scope(
    scope: dict[str, Any], session_id: object, target: links.LinkTarget | None
) -> Session:
    return session_for(_credentials_from_scope(scope), session_id, target)


async def authorize_scope(
    scope: dict[str, Any], session_id: object, target: links.LinkTarget | None = None
) -> Session:
    """
    `session_for()` with the credentials of an ASGI HTTP or WebSocket scope,
    in one trip to a worker thread of the pool rather than two through the
    single thread shared with Django's sync code: ten thousand live clients
    connecting at once must not queue behind one thread.
    """
    return await database_sync_to_async(_authorize_scope, thread_sensitive=False)(
        scope, session_id, target
    )


def authorize_scope_sync(
    scope: dict[str, Any], session_id: object, target: links.LinkTarget | None = None
) -> Session:
    """`authorize_scope()` for a caller already on a database thread (one hop, one connection)."""
    return session_for(_credentials_from_scope(scope), session_id, target)


def authorize_scopes_sync(
    requests: Sequence[tuple[dict[str, Any], object]],
) -> list[Session | Exception]:
    """
    `authorize_scope_sync()` for each (scope, session id), with one query for
    all of their sessions: live clients arriving together are mostly on a few
    sessions. Each outcome is that request's own: its session, or the
    exception `authorize_scope_sync()` would have raised for it.
    """
    checks: list[tuple[Credentials, str] | Exception] = []
    for scope, session_id in requests:
        try:
            checks.append((_credentials_from_scope(scope), validate_session_id(session_id)))
        except Exception as exc:  # noqa: BLE001 (that request's outcome)
            checks.append(exc)
    wanted = {check[1] for check in checks if not isinstance(check, Exception)}
    found: dict[str, Session] = {}
    if len(wanted) == 1:
        # The usual batch: clients of one session (a dashboard's tabs, a
        # team's screens) connecting together; its one statement is written once.
        (only,) = wanted
        if (session := _live_session(only)) is not None:
            found[only] = session
    elif wanted:
        for session in Session.objects.live().filter(session_id__in=wanted):
            found[session.session_id] = session
    outcomes: list[Session | Exception] = []
    for check in checks:
        if isinstance(check, Exception):
            outcomes.append(check)
            continue
        credentials, valid_id = check
        try:
            outcomes.append(_reached(credentials, found.get(valid_id), None))
        except Exception as exc:  # noqa: BLE001 (that request's outcome)
            outcomes.append(exc)
    return outcomes


def authorize_request(
    request: HttpRequest | Any, session_id: object, target: links.LinkTarget | None = None
) -> Session:
    """`session_for()` with the credentials of a Django or DRF request."""
    return session_for(credentials_from_request(request), session_id, target)


async def aauthorize_request(
    request: HttpRequest, session_id: object, target: links.LinkTarget | None = None
) -> Session:
    """`authorize_request()` for async views: `request.user` is resolved on a thread."""
    return await database_sync_to_async(authorize_request)(request, session_id, target)


def _bearer(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _authenticated(user: Any) -> Any:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if not getattr(user, "is_active", True):
        return None
    return user


def _attach_user(request: HttpRequest) -> None:
    """Set `request.session` and `request.user` from the session cookie, as Django's would."""
    if not apps.is_installed("django.contrib.sessions") or not apps.is_installed(
        "django.contrib.auth"
    ):
        return
    from django.contrib.auth import get_user

    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if session_key is None:
        return
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(session_key)
    request.user = get_user(request)  # type: ignore[assignment]


class DjangoUserAuthentication(BaseAuthentication):
    """
    DRF authentication that keeps the user Django's session middleware signed
    in. DRF replaces `request.user` with what its authenticators return, so
    without one the views would see every user as anonymous; the CSRF check
    is left to `credentials_from_request`, like on every other path.
    """

    def authenticate(self, request: Any) -> tuple[Any, None] | None:
        user = _authenticated(getattr(request._request, "user", None))
        return None if user is None else (user, None)


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def _csrf_passes(request: HttpRequest) -> bool:
    # A copy whose form data reads as empty: the token must come from the
    # header, because parsing the body here would consume an upload before
    # its own handlers are set.
    probe = copy.copy(request)
    probe._post, probe._files = QueryDict(), MultiValueDict()  # type: ignore[attr-defined]
    check = _CsrfCheck(lambda _request: None)  # type: ignore[arg-type,return-value]
    check.process_request(probe)
    return check.process_view(probe, None, (), {}) is None  # type: ignore[arg-type]


def _same_origin(request: HttpRequest) -> bool:
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        return True  # not a browser
    try:
        host = request.get_host()
    except DisallowedHost:
        return False
    if origin == f"{request.scheme}://{host}":
        return True
    parts = urlsplit(origin)
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if origin == trusted:
            return True
        trusted_parts = urlsplit(trusted)
        if (
            "*" in trusted_parts.netloc
            and trusted_parts.scheme == parts.scheme
            and is_same_domain(parts.netloc, trusted_parts.netloc.replace("*", "", 1))
        ):
            return True
    return False

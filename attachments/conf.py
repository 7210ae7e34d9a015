"""
The attachments app's settings, each read live from Django settings so that
`override_settings` and a host project's `settings.py` both simply work.

    ATTACHMENTS_WAREHOUSE_DIR     root of the session directories ("WareHouse", relative to the cwd)
    ATTACHMENTS_MAX_UPLOAD_BYTES  largest accepted upload, or None for no limit (None)
    ATTACHMENTS_AUTO_CLEAN        drop a session's attachments/ when it completes (False)
    ATTACHMENTS_SESSION_MAX_BYTES quota: total bytes of a session's attachments, or None (None)
    ATTACHMENTS_SESSION_MAX_FILES quota: number of a session's attachments, or None (None)
    ATTACHMENTS_RECONCILE_AT_START  reconcile the warehouse when a worker starts (True); see
                                  attachments.reconcile
    ATTACHMENTS_UPLOAD_BUFFER_BYTES  bytes gathered before each disk write of an upload (1 MiB)
    ATTACHMENTS_BUFFERED_BODY_MAX_BYTES  largest request body accepted when the server reads
                                  whole bodies into memory (Daphne); see attachments.buffering
                                  (16 MiB)
    ATTACHMENTS_TUS_EXPIRY        seconds a resumable (tus) upload may stay unfinished after its
                                  last byte arrived before it is removed (86400)
    ATTACHMENTS_TUS_LEASE         seconds a PATCH holds a resumable upload without renewing
                                  its lease; a holder that died frees it this long after its
                                  last renewal (30)
    ATTACHMENTS_DIRECT_IO         write uploads larger than one buffer with O_DIRECT where the
                                  filesystem accepts it (True); turn off on network
                                  filesystems where uncached writes are synchronous
    ATTACHMENTS_UPLOAD_SCANNERS   dotted paths (or callables) run on each upload before
                                  it is recorded, e.g. ["attachments.clamav.scan"] ([])
    ATTACHMENTS_UNSCANNABLE       "refuse" or "keep" (marked unscanned) a file too large
                                  for a scanner ("refuse")
    ATTACHMENTS_CLAMD_ADDRESS     "unix:///run/clamav/clamd.ctl" or "tcp://host:3310"
                                  ("unix:///run/clamav/clamd.ctl")
    ATTACHMENTS_CLAMD_MAX_BYTES   clamd's StreamMaxLength (25 MiB, clamd's default)
    ATTACHMENTS_CLAMD_TIMEOUT     seconds to wait for clamd (60)
    ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES  largest file whose metadata carries a `data_uri`;
                                  0 disables data URIs (65536)
    ATTACHMENTS_ZIP_COMPRESS_LEVEL  deflate level of the session zip, 1 (fast) to 9 (small);
                                  6 is zlib's and `zip`'s default (6)
    ATTACHMENTS_SENDFILE_HEADER   None to stream files from the app, or "X-Accel-Redirect"
                                  (nginx) / "X-Sendfile" (Apache, lighttpd) to hand the body
                                  to the reverse proxy once the access checks passed (None)
    ATTACHMENTS_SENDFILE_ROOT     where the proxy finds the warehouse: the internal location
                                  (URI prefix) for X-Accel-Redirect, required with it; the
                                  warehouse's path as the proxy sees it for X-Sendfile
                                  (None: the warehouse's own absolute path)
    ATTACHMENTS_ACCESS_POLICY     "token": a session is reached with its token, by its owner
                                  or staff, or with an internal JWT naming it; "open": with
                                  its id alone, for deployments behind a guarding proxy ("token")
    ATTACHMENTS_JWT_SECRET        HS256 key of the internal JWTs that portals mint; None
                                  disables them (None)
    ATTACHMENTS_JWT_ISSUER        the `iss` such a JWT must carry, or None not to check (None)
    ATTACHMENTS_JWT_AUDIENCE      the `aud` such a JWT must carry, or None not to check (None)
    ATTACHMENTS_SIGNED_LINK_MAX_AGE  longest life in seconds of a signed download link; a
                                  request may ask for less with `expires_in` (3600)
    ATTACHMENTS_SESSION_CREATE_RATE  DRF throttle rate of POST /api/sessions per client
                                  address (or user), e.g. "30/minute"; None: no limit (None)
    ATTACHMENTS_FAST_PATH_MIDDLEWARE  the middleware (dotted paths) that the ASGI fast paths
                                  (the event feed, an upload's 201, a tus PATCH's 204) run
                                  for their response headers, where MIDDLEWARE lists it and
                                  in MIDDLEWARE's order: only middleware that sets headers
                                  without I/O (Django's Security and XFrameOptions
                                  middleware, django-cors-headers'); see
                                  attachments.header_policy
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

DEFAULT_FAST_PATH_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)

PREFIX = "ATTACHMENTS_"
# Each setting's default, which `conf` and the system checks (`attachments.checks`) share.
DEFAULTS: dict[str, Any] = {
    "WAREHOUSE_DIR": "WareHouse",
    "MAX_UPLOAD_BYTES": None,
    "SESSION_MAX_BYTES": None,
    "SESSION_MAX_FILES": None,
    "AUTO_CLEAN": False,
    "BUFFERED_BODY_MAX_BYTES": 16 << 20,
    "TUS_EXPIRY": 86400,
    "RECONCILE_AT_START": True,
    "UPLOAD_BUFFER_BYTES": 1 << 20,
    "DIRECT_IO": True,
    "UPLOAD_SCANNERS": (),
    "UNSCANNABLE": "refuse",
    "CLAMD_ADDRESS": "unix:///run/clamav/clamd.ctl",
    "CLAMD_MAX_BYTES": 25 * 1024 * 1024,
    "CLAMD_TIMEOUT": 60,
    "INLINE_DATA_URI_MAX_BYTES": 64 * 1024,
    "ZIP_COMPRESS_LEVEL": 6,
    "SENDFILE_HEADER": None,
    "SENDFILE_ROOT": None,
    "ACCESS_POLICY": "token",
    "JWT_SECRET": None,
    "JWT_ISSUER": None,
    "JWT_AUDIENCE": None,
    "SIGNED_LINK_MAX_AGE": 3600,
    "SESSION_CREATE_RATE": None,
    "FAST_PATH_MIDDLEWARE": DEFAULT_FAST_PATH_MIDDLEWARE,
}


class Settings:
    def raw(self, name: str) -> Any:
        """The setting as the project gives it (unchecked), or its default."""
        return getattr(settings, PREFIX + name, DEFAULTS[name])

    @property
    def WAREHOUSE_DIR(self) -> Path:
        return Path(self.raw("WAREHOUSE_DIR")).absolute()

    @property
    def MAX_UPLOAD_BYTES(self) -> int | None:
        return self.raw("MAX_UPLOAD_BYTES")

    @property
    def SESSION_MAX_BYTES(self) -> int | None:
        return self.raw("SESSION_MAX_BYTES")

    @property
    def SESSION_MAX_FILES(self) -> int | None:
        return self.raw("SESSION_MAX_FILES")

    @property
    def AUTO_CLEAN(self) -> bool:
        return bool(self.raw("AUTO_CLEAN"))

    @property
    def BUFFERED_BODY_MAX_BYTES(self) -> int:
        return int(self.raw("BUFFERED_BODY_MAX_BYTES"))

    @property
    def TUS_EXPIRY(self) -> int:
        return int(self.raw("TUS_EXPIRY"))

    @property
    def TUS_LEASE(self) -> float:
        return float(getattr(settings, "ATTACHMENTS_TUS_LEASE", 30))

    @property
    def RECONCILE_AT_START(self) -> bool:
        return bool(self.raw("RECONCILE_AT_START"))

    @property
    def UPLOAD_BUFFER_BYTES(self) -> int:
        return int(self.raw("UPLOAD_BUFFER_BYTES"))

    @property
    def DIRECT_IO(self) -> bool:
        return bool(self.raw("DIRECT_IO"))

    @property
    def UPLOAD_SCANNERS(self) -> list[Any]:
        return list(self.raw("UPLOAD_SCANNERS"))

    @property
    def UNSCANNABLE(self) -> str:
        return str(self.raw("UNSCANNABLE"))

    @property
    def CLAMD_ADDRESS(self) -> str:
        return str(self.raw("CLAMD_ADDRESS"))

    @property
    def CLAMD_MAX_BYTES(self) -> int:
        return int(self.raw("CLAMD_MAX_BYTES"))

    @property
    def CLAMD_TIMEOUT(self) -> float:
        return float(self.raw("CLAMD_TIMEOUT"))

    @property
    def INLINE_DATA_URI_MAX_BYTES(self) -> int:
        return int(self.raw("INLINE_DATA_URI_MAX_BYTES"))

    @property
    def ZIP_COMPRESS_LEVEL(self) -> int:
        return int(self.raw("ZIP_COMPRESS_LEVEL"))

    @property
    def SENDFILE_HEADER(self) -> str | None:
        return self.raw("SENDFILE_HEADER") or None

    @property
    def SENDFILE_ROOT(self) -> str | None:
        value = self.raw("SENDFILE_ROOT")
        return None if value is None else str(value)

    @property
    def ACCESS_POLICY(self) -> str:
        return str(self.raw("ACCESS_POLICY"))

    @property
    def JWT_SECRET(self) -> str | None:
        return self.raw("JWT_SECRET") or None

    @property
    def JWT_ISSUER(self) -> str | None:
        return self.raw("JWT_ISSUER") or None

    @property
    def JWT_AUDIENCE(self) -> str | None:
        return self.raw("JWT_AUDIENCE") or None

    @property
    def SIGNED_LINK_MAX_AGE(self) -> int:
        return int(self.raw("SIGNED_LINK_MAX_AGE"))

    @property
    def SESSION_CREATE_RATE(self) -> str | None:
        return self.raw("SESSION_CREATE_RATE") or None

    @property
    def FAST_PATH_MIDDLEWARE(self) -> tuple[str, ...]:
        return tuple(self.raw("FAST_PATH_MIDDLEWARE"))


conf = Settings()

"""
Settings for the reference deployment.

This is the only module that reads the environment. Each variable maps to a
Django setting; the apps read their own settings through `attachments.conf`,
`artifacts.conf` and `workflows.conf`, so a host project configures them in its own settings.

Environment:
    MAC_WAREHOUSE_DIR        where session directories live (default ./WareHouse)
    MAC_MAX_UPLOAD_BYTES     largest accepted upload in bytes (default: no limit)
    MAC_AUTO_CLEAN_ATTACHMENTS  1 to drop attachments/ when a session completes
    MAC_SESSION_QUOTA_BYTES  total bytes of one session's attachments (default: no quota)
    MAC_SESSION_QUOTA_FILES  number of one session's attachments (default: no quota)
    MAC_DIRECT_IO            0 to write uploads through the page cache (e.g. on NFS); default 1
    MAC_RECONCILE_AT_START   0 to skip reconciling the warehouse when a worker starts; default 1
    MAC_TUS_EXPIRY           seconds an unfinished resumable upload is kept after its last byte
    MAC_TUS_LEASE            seconds before a resumable upload held by a dead worker is free (30)
    MAC_BUFFERED_BODY_MAX_BYTES  largest request body under Daphne (which buffers bodies)
    MAC_UPLOAD_SCANNERS      comma-separated scanners, e.g. attachments.clamav.scan (none)
    MAC_UNSCANNABLE          refuse (default) or keep files too large for a scanner
    MAC_CLAMD_ADDRESS        unix:///run/clamav/clamd.ctl (default) or tcp://host:3310
    MAC_CLAMD_MAX_BYTES      clamd's StreamMaxLength (default 25 MiB)
    MAC_WORKFLOWS_DIR        where workflow YAML files live (default: the shipped examples)
    MAC_NODE_TIMEOUT         default seconds a python node may run (300)
    MAC_NODE_MEMORY_BYTES    address-space limit of a python node (2 GiB)
    MAC_SERVE_STATIC         0 when a proxy serves STATIC_ROOT (default 1: the app serves them)
    MAC_INLINE_DATA_URI_MAX_BYTES  largest file given a data_uri in its metadata (default 65536;
                             0 disables)
    MAC_ZIP_COMPRESS_LEVEL   deflate level of the session zip, 1 (fast) to 9 (small); default 6
    MAC_SENDFILE_HEADER      X-Accel-Redirect or X-Sendfile to let the reverse proxy send
                             file bodies (default: the app streams them)
    MAC_SENDFILE_ROOT        the proxy's internal location for the warehouse (X-Accel-Redirect),
                             or the warehouse's path as the proxy sees it (X-Sendfile)
    MAC_ACCESS_POLICY        token (default): a session is reached with its token, by its
                             owner, or with an internal JWT; open: with its id alone (only
                             behind a proxy that authorises requests)
    MAC_JWT_SECRET           HS256 key of internal JWTs naming sessions (default: JWTs refused)
    MAC_JWT_ISSUER, MAC_JWT_AUDIENCE  the iss / aud those JWTs must carry (default: not checked)
    MAC_SIGNED_LINK_MAX_AGE  longest life of a signed download link, in seconds (3600)
    MAC_SESSION_CREATE_RATE  e.g. 30/minute: POST /api/sessions per client (default: no limit)
    MAC_CORS_ALLOWED_ORIGINS comma list of origins allowed to call /api/ from a browser
                             (default: none, CORS off)
    MAC_SECRET_KEY           the key of signed links and Django sessions (default: the file below)
    MAC_SECRET_KEY_FILE      a file holding that key, owner-only; scripts/serve generates
                             it once (default: none: a placeholder refused outside DEBUG)
    MAC_SANDBOX              how python nodes are confined: auto, bwrap, user, none (auto)
    MAC_SANDBOX_USER         the unprivileged user of the `user` mode
    MAC_HEADER_TIMEOUT       seconds for a request's line and headers to arrive (10)
    MAC_BODY_IDLE_TIMEOUT    seconds a request body may stall while it is read (30)
    MAC_KEEP_ALIVE_TIMEOUT   seconds an idle kept-alive connection stays open (5)
    MAC_MAX_HEADER_BYTES     largest request line and headers, in bytes (65536)
                             (the four above: the default server, macproject.server)
    MAC_SERVER_CPU           auto: the default server (macproject.server) keeps its threads
                             on one CPU and detects MIME types in processes on the others;
                             or a CPU number; or off. Default: auto with the in-memory
                             layer (one process), off with REDIS_URL (macproject.cpu)
    MAC_DEBUG, MAC_ALLOWED_HOSTS, MAC_LOG_LEVEL
    MAC_EVENT_RETENTION      artifact events kept per session (default: keep everything)
    MAC_EVENT_RECHECK_SECONDS   how often event waiters re-check the database (default 1)
    MAC_SHUTDOWN_GRACE       seconds from SIGTERM to exit; live clients are let go at once (10)
    DATABASE_URL             e.g. postgres://root@127.0.0.1:5432/test (default SQLite)
    MAC_DB_POOL_SIZE         PostgreSQL connections pooled per worker process; 0: no pool (20)
    REDIS_URL                e.g. redis://127.0.0.1:6379/0 (default in-memory layer)
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as cors_default_headers

from macproject.secret_key import PLACEHOLDER as PLACEHOLDER_SECRET_KEY
from macproject.secret_key import read_key_file

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


# A key generated per process would break signed values across workers, so the
# key comes from MAC_SECRET_KEY, or from the per-installation file that
# scripts/serve generates once (MAC_SECRET_KEY_FILE). The placeholder is for
# tests and DEBUG only: the check attachments.E030 refuses it otherwise.
if os.environ.get("MAC_SECRET_KEY"):
    SECRET_KEY = os.environ["MAC_SECRET_KEY"]
elif os.environ.get("MAC_SECRET_KEY_FILE"):
    SECRET_KEY = read_key_file(os.environ["MAC_SECRET_KEY_FILE"])
else:
    SECRET_KEY = PLACEHOLDER_SECRET_KEY
DEBUG = _env_bool("MAC_DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("MAC_ALLOWED_HOSTS", "*").split(",") if h]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "attachments",
    "artifacts",
    "workflows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Headers on every response (SecurityMiddleware, XFrameOptionsMiddleware).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# CORS is off unless origins are listed; then only for the API, without
# cookies (browsers on other origins send a session token or a JWT).
CORS_ALLOWED_ORIGINS = [
    o.strip() for o in os.environ.get("MAC_CORS_ALLOWED_ORIGINS", "").split(",") if o.strip()
]
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = [
    "Content-Disposition",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Repr-Digest",
    "Retry-After",
    # tus (resumable uploads) clients in a browser read these.
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Attachment-Id",
]
# What tus clients send beside the usual headers.
CORS_ALLOW_HEADERS = [
    *cors_default_headers,
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-checksum",
    "upload-defer-length",
]
CORS_ALLOW_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]

ROOT_URLCONF = "macproject.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "macproject.asgi.application"

_sqlite_path = BASE_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{_sqlite_path}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several server threads write at once; WAL and a busy timeout turn
    # "database is locked" into a short wait. synchronous=FULL keeps every
    # commit durable in WAL mode too (NORMAL may lose the last ones on power loss).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        }
    )
    # Threads cannot share an in-memory database, so tests get a file.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}
    # Django's backend, reusing SQLite handles instead of opening one per
    # request (and paying for the PRAGMAs above each time): macproject.sqlite.
    DATABASES["default"]["ENGINE"] = "macproject.sqlite"
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool per worker process: a request borrows a connection instead of
    # opening one (most of a short request's time without it).
    # MAC_DB_POOL_SIZE=0 turns it off (e.g. behind PgBouncer).
    _pool_size = _env_int("MAC_DB_POOL_SIZE")
    _pool_size = 20 if _pool_size is None else _pool_size
    if _pool_size > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": _pool_size,
            "timeout": 10,
        }

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 gives sockets a 5 s timeout by default, which cuts
                # channels-redis's 5 s blocking receive short and crashes every
                # idle consumer (django/channels_redis#422). Any timeout also
                # wraps each write in asyncio.wait_for, which on Python 3.11 can
                # swallow a task's cancellation. No timeout, as before redis-py 8.
                # It also caps a pool at 100 connections and fails the 101st
                # concurrent command instead of waiting (a burst of sockets
                # connecting at once); the cap was unbounded before.
                "hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": 1000}],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "build" / "static"
MAC_SERVE_STATIC = _env_bool("MAC_SERVE_STATIC", True)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser with a nesting bound and no infinities (attachments.parsers).
    "DEFAULT_PARSER_CLASSES": [
        "attachments.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Session attachments and artifact events",
    "DESCRIPTION": (
        "Per-session attachments and live artifact events for workflow and agent platforms. "
        'Every error is JSON: {"detail": <sentence>, "code": <machine code>}.'
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # A session's status appears in Session and CreatedSession: one enum, one name.
    "ENUM_NAME_OVERRIDES": {"SessionStatusEnum": "attachments.models.Session.Status"},
    # The reference pages' assets come from the sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "attachments.openapi.describe_identifiers",
        "workflows.serializers.one_of_workflow_or_alias",
        "artifacts.serializers.describe_last_event_cursor",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("MAC_LOG_LEVEL", "INFO")},
}

# The apps' own settings (see attachments/conf.py, artifacts/conf.py, workflows/conf.py).
ATTACHMENTS_WAREHOUSE_DIR = Path(os.environ.get("MAC_WAREHOUSE_DIR") or BASE_DIR / "WareHouse")
ATTACHMENTS_MAX_UPLOAD_BYTES = _env_int("MAC_MAX_UPLOAD_BYTES")
ATTACHMENTS_AUTO_CLEAN = _env_bool("MAC_AUTO_CLEAN_ATTACHMENTS")
ATTACHMENTS_SESSION_MAX_BYTES = _env_int("MAC_SESSION_QUOTA_BYTES")
ATTACHMENTS_SESSION_MAX_FILES = _env_int("MAC_SESSION_QUOTA_FILES")
ATTACHMENTS_DIRECT_IO = _env_bool("MAC_DIRECT_IO", True)
ATTACHMENTS_RECONCILE_AT_START = _env_bool("MAC_RECONCILE_AT_START", True)
if (_buffered_max := _env_int("MAC_BUFFERED_BODY_MAX_BYTES")) is not None:
    ATTACHMENTS_BUFFERED_BODY_MAX_BYTES = _buffered_max
if (_tus_expiry := _env_int("MAC_TUS_EXPIRY")) is not None:
    ATTACHMENTS_TUS_EXPIRY = _tus_expiry
if (_tus_lease := _env_int("MAC_TUS_LEASE")) is not None:
    ATTACHMENTS_TUS_LEASE = _tus_lease
ATTACHMENTS_UPLOAD_SCANNERS = [s for s in os.environ.get("MAC_UPLOAD_SCANNERS", "").split(",") if s]
ATTACHMENTS_UNSCANNABLE = os.environ.get("MAC_UNSCANNABLE", "refuse")
ATTACHMENTS_CLAMD_ADDRESS = os.environ.get("MAC_CLAMD_ADDRESS", "unix:///run/clamav/clamd.ctl")
if _env_int("MAC_CLAMD_MAX_BYTES") is not None:
    ATTACHMENTS_CLAMD_MAX_BYTES = _env_int("MAC_CLAMD_MAX_BYTES")
WORKFLOWS_DIR = os.environ.get("MAC_WORKFLOWS_DIR") or None
if os.environ.get("MAC_NODE_TIMEOUT"):
    WORKFLOWS_NODE_TIMEOUT = float(os.environ["MAC_NODE_TIMEOUT"])
# Connection limits of the default server (macproject.server).
SERVER_HEADER_TIMEOUT = _env_float("MAC_HEADER_TIMEOUT", 10)
SERVER_BODY_IDLE_TIMEOUT = _env_float("MAC_BODY_IDLE_TIMEOUT", 30)
SERVER_KEEP_ALIVE_TIMEOUT = _env_float("MAC_KEEP_ALIVE_TIMEOUT", 5)
SERVER_MAX_HEADER_BYTES = _env_int("MAC_MAX_HEADER_BYTES") or 64 * 1024
# The default server's CPU (macproject.cpu): "off", "auto" or a CPU number.
# Pinning is for one server process, which the in-memory layer implies; with
# Redis there may be several, each to be given a CPU of its own.
SERVER_CPU = os.environ.get("MAC_SERVER_CPU") or ("off" if REDIS_URL else "auto")
if os.environ.get("MAC_SANDBOX"):
    WORKFLOWS_SANDBOX = os.environ["MAC_SANDBOX"].strip()
if os.environ.get("MAC_SANDBOX_USER"):
    WORKFLOWS_SANDBOX_USER = os.environ["MAC_SANDBOX_USER"].strip()
if os.environ.get("MAC_NODE_MEMORY_BYTES"):
    WORKFLOWS_NODE_MEMORY_BYTES = _env_int("MAC_NODE_MEMORY_BYTES")
if (_inline_max := _env_int("MAC_INLINE_DATA_URI_MAX_BYTES")) is not None:
    ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES = _inline_max
if (_zip_level := _env_int("MAC_ZIP_COMPRESS_LEVEL")) is not None:
    ATTACHMENTS_ZIP_COMPRESS_LEVEL = _zip_level
ATTACHMENTS_SENDFILE_HEADER = os.environ.get("MAC_SENDFILE_HEADER", "").strip() or None
ATTACHMENTS_SENDFILE_ROOT = os.environ.get("MAC_SENDFILE_ROOT", "").strip() or None
ATTACHMENTS_ACCESS_POLICY = os.environ.get("MAC_ACCESS_POLICY", "").strip() or "token"
ATTACHMENTS_JWT_SECRET = os.environ.get("MAC_JWT_SECRET") or None
ATTACHMENTS_JWT_ISSUER = os.environ.get("MAC_JWT_ISSUER") or None
ATTACHMENTS_JWT_AUDIENCE = os.environ.get("MAC_JWT_AUDIENCE") or None
if (_link_age := _env_int("MAC_SIGNED_LINK_MAX_AGE")) is not None:
    ATTACHMENTS_SIGNED_LINK_MAX_AGE = _link_age
ATTACHMENTS_SESSION_CREATE_RATE = os.environ.get("MAC_SESSION_CREATE_RATE", "").strip() or None
ARTIFACTS_EVENT_RETENTION = _env_int("MAC_EVENT_RETENTION")
ARTIFACTS_RECHECK_SECONDS = _env_float("MAC_EVENT_RECHECK_SECONDS", 1.0)
ARTIFACTS_SHUTDOWN_GRACE = _env_float("MAC_SHUTDOWN_GRACE", 10.0)

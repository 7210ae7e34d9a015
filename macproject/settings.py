"""
Settings for the reference deployment.

This is the only module that reads the environment. Each variable maps to a
Django setting; the apps read their own settings through `attachments.conf`
and `artifacts.conf`, so a host project configures them in its own settings.

Environment:
    MAC_WAREHOUSE_DIR        where session directories live (default ./WareHouse)
    MAC_MAX_UPLOAD_BYTES     largest accepted upload in bytes (default: no limit)
    MAC_AUTO_CLEAN_ATTACHMENTS  1 to drop attachments/ when a session completes
    MAC_EVENT_RETENTION      artifact events kept per session (default: keep everything)
    MAC_EVENT_RECHECK_SECONDS   how often event waiters re-check the database (default 1)
    MAC_SECRET_KEY, MAC_DEBUG, MAC_ALLOWED_HOSTS
    DATABASE_URL             e.g. postgres://root@127.0.0.1:5432/test (default SQLite)
    REDIS_URL                e.g. redis://127.0.0.1:6379/0 (default in-memory layer)
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

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


# A key generated per process would break signed values across workers, so
# deployments must set one; the embedded default is for a laptop.
SECRET_KEY = os.environ.get("MAC_SECRET_KEY") or "insecure-embedded-default-set-MAC_SECRET_KEY"
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
    "rest_framework",
    "attachments",
    "artifacts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
    # "database is locked" into a short wait.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Threads cannot share an in-memory database, so tests get a file.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}

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

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("MAC_LOG_LEVEL", "INFO")},
}

# The apps' own settings (see attachments/conf.py and artifacts/conf.py).
ATTACHMENTS_WAREHOUSE_DIR = Path(os.environ.get("MAC_WAREHOUSE_DIR") or BASE_DIR / "WareHouse")
ATTACHMENTS_MAX_UPLOAD_BYTES = _env_int("MAC_MAX_UPLOAD_BYTES")
ATTACHMENTS_AUTO_CLEAN = _env_bool("MAC_AUTO_CLEAN_ATTACHMENTS")
ARTIFACTS_EVENT_RETENTION = _env_int("MAC_EVENT_RETENTION")
ARTIFACTS_RECHECK_SECONDS = _env_float("MAC_EVENT_RECHECK_SECONDS", 1.0)

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.test import override_settings

from attachments.conf import conf

SETTINGS = (
    "ATTACHMENTS_WAREHOUSE_DIR",
    "ATTACHMENTS_FAST_PATH_MIDDLEWARE",
    "ATTACHMENTS_MAX_UPLOAD_BYTES",
    "ATTACHMENTS_AUTO_CLEAN",
    "ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES",
    "ATTACHMENTS_ZIP_COMPRESS_LEVEL",
    "ATTACHMENTS_SENDFILE_HEADER",
    "ATTACHMENTS_SENDFILE_ROOT",
    "ATTACHMENTS_ACCESS_POLICY",
    "ATTACHMENTS_JWT_SECRET",
    "ATTACHMENTS_JWT_ISSUER",
    "ATTACHMENTS_JWT_AUDIENCE",
    "ATTACHMENTS_SIGNED_LINK_MAX_AGE",
    "ATTACHMENTS_SESSION_CREATE_RATE",
    "ATTACHMENTS_RECONCILE_AT_START",
    "ATTACHMENTS_TUS_EXPIRY",
    "ATTACHMENTS_BUFFERED_BODY_MAX_BYTES",
)


def test_defaults_when_unset():
    with override_settings():
        for name in SETTINGS:
            if hasattr(settings, name):
                delattr(settings, name)
        assert conf.WAREHOUSE_DIR == Path("WareHouse").absolute()
        assert conf.MAX_UPLOAD_BYTES is None
        assert conf.AUTO_CLEAN is False
        assert conf.RECONCILE_AT_START is True
        assert conf.TUS_EXPIRY == 86400
        assert conf.BUFFERED_BODY_MAX_BYTES == 16 << 20
        assert conf.UPLOAD_BUFFER_BYTES == 1 << 20
        assert conf.INLINE_DATA_URI_MAX_BYTES == 65536
        assert conf.ZIP_COMPRESS_LEVEL == 6
        assert conf.SENDFILE_HEADER is None
        assert conf.SENDFILE_ROOT is None
        assert conf.ACCESS_POLICY == "token"
        assert conf.JWT_SECRET is None
        assert conf.JWT_ISSUER is None and conf.JWT_AUDIENCE is None
        assert conf.SIGNED_LINK_MAX_AGE == 3600
        assert conf.SESSION_CREATE_RATE is None
        assert conf.FAST_PATH_MIDDLEWARE == (
            "django.middleware.security.SecurityMiddleware",
            "corsheaders.middleware.CorsMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        )


def test_access_settings_follow_override_settings():
    with override_settings(
        ATTACHMENTS_ACCESS_POLICY="open",
        ATTACHMENTS_JWT_SECRET="s" * 32,
        ATTACHMENTS_JWT_ISSUER="portal",
        ATTACHMENTS_JWT_AUDIENCE="files",
        ATTACHMENTS_SIGNED_LINK_MAX_AGE=60,
        ATTACHMENTS_SESSION_CREATE_RATE="5/minute",
    ):
        assert conf.ACCESS_POLICY == "open"
        assert conf.JWT_SECRET == "s" * 32
        assert (conf.JWT_ISSUER, conf.JWT_AUDIENCE) == ("portal", "files")
        assert conf.SIGNED_LINK_MAX_AGE == 60
        assert conf.SESSION_CREATE_RATE == "5/minute"


def test_blank_access_strings_mean_unset():
    with override_settings(
        ATTACHMENTS_JWT_SECRET="", ATTACHMENTS_JWT_ISSUER="", ATTACHMENTS_SESSION_CREATE_RATE=""
    ):
        assert conf.JWT_SECRET is None and conf.JWT_ISSUER is None
        assert conf.SESSION_CREATE_RATE is None


def test_follows_override_settings(tmp_path):
    with override_settings(
        ATTACHMENTS_WAREHOUSE_DIR=tmp_path,
        ATTACHMENTS_MAX_UPLOAD_BYTES=5,
        ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES=0,
        ATTACHMENTS_SENDFILE_HEADER="X-Accel-Redirect",
        ATTACHMENTS_SENDFILE_ROOT="/_warehouse/",
    ):
        assert conf.WAREHOUSE_DIR == tmp_path
        assert conf.MAX_UPLOAD_BYTES == 5
        assert conf.INLINE_DATA_URI_MAX_BYTES == 0
        assert conf.SENDFILE_HEADER == "X-Accel-Redirect"
        assert conf.SENDFILE_ROOT == "/_warehouse/"


def test_a_blank_sendfile_header_means_off():
    with override_settings(ATTACHMENTS_SENDFILE_HEADER=""):
        assert conf.SENDFILE_HEADER is None

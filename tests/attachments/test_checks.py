from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from attachments.checks import check_settings
from attachments.conf import DEFAULTS, PREFIX

# The defaults pass under the product's default policy.
pytestmark = pytest.mark.access_policy("token")


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_defaults_pass():
    assert check_settings() == []


def unset_every_setting() -> None:
    for name in DEFAULTS:
        if hasattr(settings, PREFIX + name):
            delattr(settings, PREFIX + name)


def test_the_defaults_of_conf_pass():
    with override_settings():
        unset_every_setting()
        assert check_settings() == []


def test_the_checks_read_the_settings_through_conf(monkeypatch):
    """An unset setting is checked at the default `conf` uses, not at one of the check's own."""
    monkeypatch.setitem(DEFAULTS, "ZIP_COMPRESS_LEVEL", 0)
    with override_settings():
        unset_every_setting()
        assert ids(check_settings()) == ["attachments.E010"]


@pytest.mark.parametrize("value", [42, ["a"]])
def test_warehouse_must_be_a_path(value):
    with override_settings(ATTACHMENTS_WAREHOUSE_DIR=value):
        assert ids(check_settings()) == ["attachments.E001"]


@pytest.mark.parametrize("value", [-1, "10", 1.5, True])
def test_max_upload_bytes_must_be_a_count(value):
    with override_settings(ATTACHMENTS_MAX_UPLOAD_BYTES=value):
        assert ids(check_settings()) == ["attachments.E002"]


@pytest.mark.parametrize("name", ["ATTACHMENTS_UPLOAD_BUFFER_BYTES"])
def test_numbers_must_be_numbers(name):
    with override_settings(**{name: "soon"}):
        assert ids(check_settings()) == ["attachments.E003"]


def test_scanners_must_be_a_list():
    with override_settings(ATTACHMENTS_UPLOAD_SCANNERS="attachments.clamav.scan"):
        assert ids(check_settings()) == ["attachments.E004"]


@pytest.mark.parametrize("entry", ["no.such.module.scan", "attachments.conf.conf"])
def test_scanners_must_import_and_be_callable(entry):
    with override_settings(ATTACHMENTS_UPLOAD_SCANNERS=[entry]):
        assert ids(check_settings()) == ["attachments.E005"]


def test_shipped_clamav_scanner_passes_the_check():
    with override_settings(ATTACHMENTS_UPLOAD_SCANNERS=["attachments.clamav.scan"]):
        assert check_settings() == []


def test_unscannable_policy_is_refuse_or_keep():
    with override_settings(ATTACHMENTS_UNSCANNABLE="maybe"):
        assert ids(check_settings()) == ["attachments.E006"]


@pytest.mark.parametrize("value", [-1, "64k", 1.5, True, None])
def test_inline_data_uri_max_bytes_must_be_a_count(value):
    with override_settings(ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES=value):
        assert ids(check_settings()) == ["attachments.E007"]


def test_inline_data_uri_can_be_off():
    with override_settings(ATTACHMENTS_INLINE_DATA_URI_MAX_BYTES=0):
        assert check_settings() == []


@pytest.mark.parametrize("value", ["X-Accel", "x-sendfile", "nginx", 1])
def test_sendfile_header_must_be_known(value):
    with override_settings(ATTACHMENTS_SENDFILE_HEADER=value):
        assert ids(check_settings()) == ["attachments.E008"]


@pytest.mark.parametrize("root", [None, "", "_warehouse/", 42])
def test_x_accel_redirect_needs_an_internal_location(root):
    with override_settings(
        ATTACHMENTS_SENDFILE_HEADER="X-Accel-Redirect", ATTACHMENTS_SENDFILE_ROOT=root
    ):
        assert ids(check_settings()) == ["attachments.E009"]


@pytest.mark.parametrize(
    ("header", "root"),
    [
        (None, None),
        ("X-Accel-Redirect", "/_warehouse/"),
        ("X-Sendfile", None),
        ("X-Sendfile", "/srv/wh"),
    ],
)
def test_valid_sendfile_settings(header, root):
    with override_settings(ATTACHMENTS_SENDFILE_HEADER=header, ATTACHMENTS_SENDFILE_ROOT=root):
        assert check_settings() == []


@pytest.mark.parametrize("value", [0, 10, "9", 1.0, True])
def test_zip_compress_level_is_a_deflate_level(value):
    with override_settings(ATTACHMENTS_ZIP_COMPRESS_LEVEL=value):
        assert ids(check_settings()) == ["attachments.E010"]


@pytest.mark.parametrize("value", ["closed", "", None, "TOKEN"])
def test_access_policy_is_token_or_open(value):
    with override_settings(ATTACHMENTS_ACCESS_POLICY=value):
        assert ids(check_settings()) == ["attachments.E020"]


def test_the_open_policy_is_a_warning():
    with override_settings(ATTACHMENTS_ACCESS_POLICY="open"):
        (message,) = check_settings()
    assert message.id == "attachments.W020" and not message.is_serious()


@pytest.mark.parametrize("value", ["short", 42, ["x" * 40]])
def test_jwt_secret_must_be_long_enough(value):
    with override_settings(ATTACHMENTS_JWT_SECRET=value):
        assert ids(check_settings()) == ["attachments.E021"]


@pytest.mark.parametrize("value", [None, "", "x" * 32])
def test_jwt_secret_may_be_unset_or_long(value):
    with override_settings(ATTACHMENTS_JWT_SECRET=value):
        assert check_settings() == []


@pytest.mark.parametrize("name", ["ATTACHMENTS_JWT_ISSUER", "ATTACHMENTS_JWT_AUDIENCE"])
def test_jwt_issuer_and_audience_are_strings(name):
    with override_settings(**{name: ["portal"]}):
        assert ids(check_settings()) == ["attachments.E022"]


@pytest.mark.parametrize("value", [0, -1, "3600", 1.5, True])
def test_signed_link_max_age_is_positive_seconds(value):
    with override_settings(ATTACHMENTS_SIGNED_LINK_MAX_AGE=value):
        assert ids(check_settings()) == ["attachments.E023"]


@pytest.mark.parametrize("value", ["30", "x/minute", "0/minute", "30/fortnight", 30])
def test_session_create_rate_is_a_drf_rate(value):
    with override_settings(ATTACHMENTS_SESSION_CREATE_RATE=value):
        assert ids(check_settings()) == ["attachments.E024"]


@pytest.mark.parametrize("value", [None, "30/minute", "1/s", "1000/day"])
def test_session_create_rate_may_be_unset_or_a_rate(value):
    with override_settings(ATTACHMENTS_SESSION_CREATE_RATE=value):
        assert check_settings() == []


@pytest.mark.parametrize("value", [["no.such.Middleware"], ["nodots"], [5], 5])
def test_fast_path_middleware_must_be_importable(value):
    with override_settings(ATTACHMENTS_FAST_PATH_MIDDLEWARE=value):
        assert ids(check_settings()) == ["attachments.E011"]


def test_listed_fast_path_middleware_is_fine():
    security = "django.middleware.security.SecurityMiddleware"
    with override_settings(ATTACHMENTS_FAST_PATH_MIDDLEWARE=[security]):
        assert ids(check_settings()) == []

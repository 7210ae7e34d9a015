"""File responses: the body handed to the reverse proxy."""

from __future__ import annotations

from django.test import override_settings

from attachments.serving import sendfile_target


class TestSendfileTarget:
    def test_off_by_default(self, warehouse):
        assert sendfile_target(str(warehouse / "session_a" / "x.txt")) is None

    def test_x_accel_redirect_percent_encodes(self, warehouse):
        warehouse.mkdir()
        with override_settings(
            ATTACHMENTS_SENDFILE_HEADER="X-Accel-Redirect", ATTACHMENTS_SENDFILE_ROOT="/_wh/"
        ):
            header, value = sendfile_target(str(warehouse / "session_a" / "a b\r\n日.txt"))
        assert header == "X-Accel-Redirect"
        assert value == "/_wh/session_a/a%20b%0D%0A%E6%97%A5.txt"

    def test_x_sendfile_uses_the_proxys_root(self, warehouse):
        warehouse.mkdir()
        with override_settings(
            ATTACHMENTS_SENDFILE_HEADER="X-Sendfile", ATTACHMENTS_SENDFILE_ROOT="/srv/wh"
        ):
            assert sendfile_target(str(warehouse / "session_a" / "é.txt")) == (
                "X-Sendfile",
                "/srv/wh/session_a/é".encode().decode("latin-1") + ".txt",
            )

    def test_x_sendfile_refuses_control_characters(self, warehouse):
        warehouse.mkdir()
        with override_settings(ATTACHMENTS_SENDFILE_HEADER="X-Sendfile"):
            assert sendfile_target(str(warehouse / "session_a" / "a\nb.txt")) is None

    def test_nothing_outside_the_warehouse(self, warehouse, tmp_path):
        warehouse.mkdir()
        with override_settings(
            ATTACHMENTS_SENDFILE_HEADER="X-Accel-Redirect", ATTACHMENTS_SENDFILE_ROOT="/_wh/"
        ):
            assert sendfile_target(str(tmp_path / "elsewhere.txt")) is None

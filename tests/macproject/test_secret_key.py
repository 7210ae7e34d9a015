"""No shared default secret: the per-installation key file, and the placeholder refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from django.core import checks

from macproject import secret_key
from tests.servers import ROOT


def test_a_key_file_is_made_once_owner_only(tmp_path):
    path = tmp_path / "keys" / ".mac_secret_key"
    secret_key.ensure_key_file(path)
    first = secret_key.read_key_file(path)
    assert len(first) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret_key.ensure_key_file(path)
    assert secret_key.read_key_file(path) == first
    assert [p.name for p in path.parent.iterdir()] == [".mac_secret_key"]


def test_two_installations_get_different_keys(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    secret_key.ensure_key_file(one)
    secret_key.ensure_key_file(two)
    assert secret_key.read_key_file(one) != secret_key.read_key_file(two)


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "key"
    secret_key.ensure_key_file(path)
    path.chmod(0o644)
    with pytest.raises(secret_key.KeyFileError, match="chmod 600"):
        secret_key.read_key_file(path)


def _settings_key(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAC_SECRET")}
    environment.update(env, DJANGO_SETTINGS_MODULE="macproject.settings")
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY)"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_read_the_key_file_and_prefer_the_variable(tmp_path):
    path = tmp_path / "key"
    secret_key.ensure_key_file(path)
    from_file = _settings_key({"MAC_SECRET_KEY_FILE": str(path)})
    assert from_file.stdout.strip() == secret_key.read_key_file(path)
    both = _settings_key({"MAC_SECRET_KEY_FILE": str(path), "MAC_SECRET_KEY": "x" * 60})
    assert both.stdout.strip() == "x" * 60
    neither = _settings_key({})
    assert neither.stdout.strip() == secret_key.PLACEHOLDER


def test_the_placeholder_is_refused_outside_debug(settings):
    settings.SECRET_KEY = secret_key.PLACEHOLDER
    settings.DEBUG = False
    assert "attachments.E030" in {m.id for m in checks.run_checks()}
    settings.DEBUG = True
    assert "attachments.E030" not in {m.id for m in checks.run_checks()}
    settings.DEBUG = False
    settings.SECRET_KEY = "k" * 20 + "a-real-generated-key-of-enough-length-0123456789"
    assert "attachments.E030" not in {m.id for m in checks.run_checks()}


def test_manage_py_check_fails_on_the_placeholder():
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAC_SECRET")}
    environment.pop("MAC_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "attachments.E030" in result.stderr

"""
A portal installs the apps into its own Django project: `pip install .`
gives it `attachments` (with migrations), and a minimal host project that adds
it to INSTALLED_APPS and includes its urls can migrate and take an upload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HOST_SETTINGS = """
    from pathlib import Path
    BASE_DIR = Path(__file__).resolve().parent
    SECRET_KEY = "host-project-test"
    DEBUG = False
    ALLOWED_HOSTS = ["*"]
    INSTALLED_APPS = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "rest_framework",
        "attachments",
    ]
    ROOT_URLCONF = "hosturls"
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "host.sqlite3"}
    }
    USE_TZ = True
    ATTACHMENTS_WAREHOUSE_DIR = BASE_DIR / "files"
    ATTACHMENTS_MAX_UPLOAD_BYTES = 1000
"""

HOST_URLS = """
    from django.urls import include, path
    urlpatterns = [path("portal/files/", include("attachments.urls"))]
"""

HOST_SCRIPT = """
    import json, os, django
    os.environ["DJANGO_SETTINGS_MODULE"] = "hostsettings"
    django.setup()
    import attachments
    from django.core.management import call_command
    from django.test import Client
    call_command("migrate", verbosity=0)
    client = Client()
    session = client.post("/portal/files/sessions", "{}", content_type="application/json").json()
    uploads = f"/portal/files/uploads/{session['session_id']}"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {session['token']}"}
    with open("note.md", "w") as f:
        f.write("# Hello from the host")
    with open("note.md", "rb") as f:
        without_token = client.post(uploads, {"file": f})
    with open("note.md", "rb") as f:
        upload = client.post(uploads, {"file": f}, **auth)
    too_big = client.post(uploads, {"file": __import__("io").BytesIO(b"x" * 2000)}, **auth)
    print(json.dumps({
        "module": attachments.__file__,
        "without_token": [without_token.status_code, without_token.json()["code"]],
        "upload_status": upload.status_code,
        "upload": upload.json(),
        "too_big": [too_big.status_code, too_big.json()["code"]],
        "listing": client.get(uploads, **auth).json(),
    }))
"""


@pytest.mark.server
def test_a_host_project_installs_migrates_and_uploads(tmp_path: Path):
    wheels, site, host = tmp_path / "wheels", tmp_path / "site", tmp_path / "host"
    for path in (wheels, site, host):
        path.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, ROOT], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    (host / "hostsettings.py").write_text(textwrap.dedent(HOST_SETTINGS))
    (host / "hosturls.py").write_text(textwrap.dedent(HOST_URLS))
    (host / "run.py").write_text(textwrap.dedent(HOST_SCRIPT))

    # Only the installed copy and the host are importable: not this checkout.
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path[:0] = [{str(host)!r}, {str(site)!r}]; "
            "exec(open('run.py').read())",
        ],
        cwd=host,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith(str(site))
    # The host did not choose a policy: the default, "token", guards the session.
    assert report["without_token"] == [404, "session_not_found"]
    assert report["upload_status"] == 201
    assert report["upload"]["mime"] == "text/markdown"
    assert report["too_big"] == [413, "upload_too_large"]
    assert [a["name"] for a in report["listing"]["attachments"]] == ["note.md"]
    stored = host / "files" / f"session_{report['upload']['session_id']}" / report["upload"]["path"]
    assert stored.read_text() == "# Hello from the host"

"""
File names as real clients write them in a multipart header (DESIGN.md 4:
"decoded as browsers and curl encode them"), on both upload paths. The
bodies come from the clients' own encoders; tests/e2e/test_reference_clients_server.py
sends them with curl, requests and Chromium to a real server.
"""

from __future__ import annotations

import httpx
import pytest
import urllib3

from .builders import DjangoPath, StreamingPath, new_session

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = ['say "hi".txt', "two\r\nlines.txt", 'all "of\nthem".csv', "plain.txt", "é 履.txt"]
SHOWN = {
    'say "hi".txt': 'say "hi".txt',
    "two\r\nlines.txt": "twolines.txt",
    'all "of\nthem".csv': 'all "ofthem".csv',
    "plain.txt": "plain.txt",
    "é 履.txt": "é 履.txt",
}


@pytest.fixture(params=[DjangoPath, StreamingPath], ids=lambda cls: cls.name)
def client(request):
    return request.param()


def urllib3_body(name: str) -> tuple[bytes, str]:
    """What requests sends: urllib3 writes `"` as %22, CR and LF as %0D and %0A."""
    return urllib3.encode_multipart_formdata({"file": (name, b"data")})


def httpx_body(name: str) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://t/", files={"file": (name, b"data")})
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize("encoder", [urllib3_body, httpx_body], ids=["requests", "httpx"])
@pytest.mark.parametrize("name", NAMES)
def test_a_name_comes_back_as_the_user_gave_it(client, encoder, name):
    body, content_type = encoder(name)
    if name != "plain.txt" and name.isascii():
        assert b"%22" in body or b"%0A" in body  # the client did escape it
    session = new_session()
    reply = client.post(f"/api/uploads/{session.session_id}", body, content_type)
    assert reply.status == 201, reply.body
    assert reply.body["name"] == SHOWN[name]
    # The name on disk is sanitised; the display name is not.
    assert reply.body["path"].rsplit("/", 1)[-1] == SHOWN[name].replace('"', "_")


def test_a_name_that_decodes_to_nothing_is_no_file(client):
    body, content_type = urllib3_body("\r\n")
    reply = client.post(f"/api/uploads/{new_session().session_id}", body, content_type)
    assert (reply.status, reply.body["code"]) == (400, "missing_file")

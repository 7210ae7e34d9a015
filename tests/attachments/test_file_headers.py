"""The headers of file responses: names, types, ranges, digests."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attachments.file_headers import (
    ByteRange,
    RangeNotSatisfiable,
    content_disposition,
    is_active_content,
    parse_range,
    repr_digest,
    safe_content_type,
)

# disposition; filename="<quoted-string without quote or backslash>"; filename*=<ext-value>
RFC_6266 = re.compile(
    r"(inline|attachment); filename=\"[\x20\x21\x23-\x5b\x5d-\x7e]+\"; "
    r"filename\*=UTF-8''(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})+"
)


def filename_star(header: str) -> str:
    value = header.split("filename*=", 1)[1]
    assert value.startswith("UTF-8''")
    return unquote(value.removeprefix("UTF-8''"), encoding="utf-8", errors="strict")


class TestContentDisposition:
    def test_plain_name(self):
        assert content_disposition("report.pdf", as_attachment=False) == (
            "inline; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        )

    def test_attachment(self):
        assert content_disposition("a.txt", as_attachment=True).startswith("attachment; ")

    @pytest.mark.parametrize(
        "name",
        [
            'evil".txt',
            'a"; filename="other.exe',
            "line\r\nSet-Cookie: x=1.txt",
            "semi;colon.txt",
            "back\\slash.txt",
            "per%20cent.txt",
            "tab\there.txt",
            "nul\x00byte.txt",
            "résumé.pdf",
            "日本語のファイル.csv",
            "emoji 🎉.png",
            "\u202egnp.exe",
        ],
    )
    def test_hostile_names_stay_in_their_parameter(self, name):
        header = content_disposition(name, as_attachment=True)
        assert header.isascii() and header.isprintable()
        assert header.count(";") == 2
        assert header.count('"') == 2
        assert filename_star(header) == name

    def test_fallback_keeps_what_ascii_can(self):
        header = content_disposition("résumé.pdf", as_attachment=False)
        assert 'filename="resume.pdf"' in header

    def test_fallback_for_a_name_with_nothing_ascii(self):
        header = content_disposition("日本", as_attachment=False)
        assert 'filename="__"' in header
        assert filename_star(header) == "日本"

    def test_empty_name(self):
        assert 'filename="download"' in content_disposition("", as_attachment=True)

    @given(st.text(max_size=200))
    def test_property_no_line_breaks_and_filename_star_round_trips(self, name):
        header = content_disposition(name, as_attachment=True)
        assert not any(ch in header for ch in "\r\n\x00")
        assert header.isascii() and header.isprintable()
        assert filename_star(header) == (name or "download")

    @given(st.text(max_size=200))
    def test_property_the_header_follows_the_rfc_6266_grammar(self, name):
        header = content_disposition(name, as_attachment=False)
        assert RFC_6266.fullmatch(header), header


class TestTypes:
    @pytest.mark.parametrize(
        "mime",
        [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "application/rss+xml",
            "text/javascript",
            "application/javascript",
            "application/ecmascript",
            "multipart/x-mixed-replace",
        ],
    )
    def test_active(self, mime):
        assert is_active_content(mime)

    @pytest.mark.parametrize(
        "mime", ["text/plain", "image/png", "application/pdf", "application/json", "text/csv"]
    )
    def test_passive(self, mime):
        assert not is_active_content(mime)

    @pytest.mark.parametrize(
        ("mime", "expected"),
        [
            ("text/plain", "text/plain"),
            ("Text/CSV; charset=utf-8", "text/csv"),
            ("", "application/octet-stream"),
            ("text/plain\r\nX-Evil: 1", "application/octet-stream"),
            ("nonsense", "application/octet-stream"),
        ],
    )
    def test_safe_content_type(self, mime, expected):
        assert safe_content_type(mime) == expected


class TestParseRange:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("bytes=0-0", ByteRange(0, 0)),
            ("bytes=0-9", ByteRange(0, 9)),
            ("bytes=10-", ByteRange(10, 99)),
            ("bytes=-10", ByteRange(90, 99)),
            ("bytes=-1000", ByteRange(0, 99)),
            ("bytes=95-1000", ByteRange(95, 99)),
            ("bytes=99-99", ByteRange(99, 99)),
            ("Bytes = 5 - 6", ByteRange(5, 6)),
        ],
    )
    def test_single_ranges(self, header, expected):
        assert parse_range(header, 100) == expected

    @pytest.mark.parametrize(
        "header",
        [None, "", "bytes=", "bytes=-", "bytes=9-1", "items=0-1", "bytes=0-1,5-6", "bytes=a-b"],
    )
    def test_ignored_forms_mean_the_whole_body(self, header):
        assert parse_range(header, 100) is None

    @pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
    def test_unsatisfiable(self, header):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 100)

    def test_empty_body(self):
        with pytest.raises(RangeNotSatisfiable):
            parse_range("bytes=0-", 0)
        assert parse_range("bytes=-5", 0) is None

    def test_content_range(self):
        assert ByteRange(2, 5).content_range(10) == "bytes 2-5/10"
        assert ByteRange(2, 5).length == 4


def test_repr_digest_is_base64_of_the_sha256():
    digest = hashlib.sha256(b"abc").hexdigest()
    value = repr_digest(digest)
    assert value.startswith("sha-256=:") and value.endswith(":")
    assert base64.b64decode(value[len("sha-256=:") : -1]) == hashlib.sha256(b"abc").digest()

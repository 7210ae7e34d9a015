from __future__ import annotations

import pytest
from django.http import QueryDict

from attachments import query
from attachments.exceptions import InvalidParameter


def q(text: str) -> QueryDict:
    return QueryDict(text)


class TestChoice:
    def test_default_when_absent_or_blank(self):
        assert query.choice(q(""), "mode", ("meta", "stream"), "meta") == "meta"
        assert query.choice(q("mode="), "mode", ("meta", "stream"), "meta") == "meta"

    def test_a_choice(self):
        assert query.choice(q("mode=stream"), "mode", ("meta", "stream"), "meta") == "stream"

    def test_anything_else_names_the_parameter(self):
        with pytest.raises(InvalidParameter) as caught:
            query.choice(q("mode=raw"), "mode", ("meta", "stream"), "meta")
        assert caught.value.extra == {"parameter": "mode"}
        assert caught.value.code == "invalid_parameter"
        assert "'raw'" in str(caught.value.detail)


class TestBoolean:
    @pytest.mark.parametrize("value", ["true", "True", "1", "yes", "on"])
    def test_true(self, value):
        assert query.boolean(q(f"download={value}"), "download", False) is True

    @pytest.mark.parametrize("value", ["false", "FALSE", "0", "no", "off"])
    def test_false(self, value):
        assert query.boolean(q(f"download={value}"), "download", True) is False

    def test_default(self):
        assert query.boolean(q(""), "download", True) is True

    @pytest.mark.parametrize("value", ["maybe", "2", "tru"])
    def test_invalid(self, value):
        with pytest.raises(InvalidParameter) as caught:
            query.boolean(q(f"download={value}"), "download", False)
        assert caught.value.extra == {"parameter": "download"}


class TestNonNegativeInt:
    def test_absent(self):
        assert query.non_negative_int(q(""), "after") is None

    @pytest.mark.parametrize(("value", "expected"), [("0", 0), ("42", 42), (" 7 ", 7)])
    def test_valid(self, value, expected):
        assert query.non_negative_int({"after": value}, "after") == expected

    @pytest.mark.parametrize("value", ["-1", "1.5", "abc", "١٢", "9" * 20, "0x10"])
    def test_invalid(self, value):
        with pytest.raises(InvalidParameter) as caught:
            query.non_negative_int({"after": value}, "after")
        assert caught.value.extra == {"parameter": "after"}


def test_comma_list_joins_repeats_and_drops_blanks():
    assert query.comma_list(q("ext=csv,,png&ext=.md, "), "ext") == ["csv", "png", ".md"]

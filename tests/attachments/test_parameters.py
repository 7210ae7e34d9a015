from __future__ import annotations

import pytest
from django.http import QueryDict

from attachments import parameters as query
from attachments.exceptions import InvalidParameter
from attachments.selection import FileFilterParameters


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


def test_comma_lists_join_repeats_and_drop_blanks():
    read = FileFilterParameters.read(q("include_ext=csv,,png&include_ext=.md, "))
    assert read["include_ext"] == ["csv", "png", "md"]


def test_a_blank_value_is_absent_where_the_set_says_so():
    assert "max_size" not in FileFilterParameters.read(q("max_size="))


def test_lists_are_bounded():
    with pytest.raises(InvalidParameter) as caught:
        FileFilterParameters.read(q("include_ext=" + ",".join(["a"] * 51)))
    assert caught.value.extra == {"parameter": "include_ext"}


@pytest.mark.parametrize("value", ["7", " 7 ", 7])
def test_one_whole_number_parser_for_text_and_json(value):
    assert query.whole_number(value) == 7


@pytest.mark.parametrize("value", [True, -1, "-1", "1e3", "9" * 19, "١٢", None])
def test_what_is_not_a_whole_number(value):
    with pytest.raises(ValueError):
        query.whole_number(value)


@pytest.mark.parametrize(
    ("item", "expected"), [("image/", "image/"), ("image/*", "image/"), ("Text/CSV", "text/csv")]
)
def test_mime_filter_items(item, expected):
    assert query.mime_filter_item(item) == expected


@pytest.mark.parametrize("item", ["image", "/png", "image/png;q=1", "*/*"])
def test_what_is_not_a_mime_filter_item(item):
    with pytest.raises(ValueError):
        query.mime_filter_item(item)

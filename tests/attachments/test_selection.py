from __future__ import annotations

import pytest
from django.http import QueryDict

from attachments.exceptions import InvalidParameter
from attachments.selection import FileFilters


def parse(text: str) -> FileFilters:
    return FileFilters.from_query(QueryDict(text))


class TestFromQuery:
    def test_nothing(self):
        assert parse("") == FileFilters()

    def test_extensions_with_or_without_a_dot(self):
        assert parse("include_ext=.CSV,png,tar.gz").extensions == ("csv", "png", "tar.gz")

    def test_mime_types_and_prefixes(self):
        assert parse("include_mime=image/,Text/CSV").mime_types == ("image/", "text/csv")

    def test_max_size(self):
        assert parse("max_size=1024").max_size == 1024

    @pytest.mark.parametrize(
        ("text", "parameter"),
        [
            ("include_ext=a/b", "include_ext"),
            ("include_ext=" + "x" * 40, "include_ext"),
            ("include_mime=image", "include_mime"),
            ("include_mime=/png", "include_mime"),
            ("max_size=-1", "max_size"),
            ("max_size=big", "max_size"),
        ],
    )
    def test_bad_values_name_their_parameter(self, text, parameter):
        with pytest.raises(InvalidParameter) as caught:
            parse(text)
        assert caught.value.extra == {"parameter": parameter}


class TestMatches:
    def test_no_filters_pass_everything(self):
        assert FileFilters().matches("anything", 10**12)

    def test_extension(self):
        filters = FileFilters(extensions=("csv", "tar.gz"))
        assert filters.matches("data.CSV", 1)
        assert filters.matches("x.tar.gz", 1)
        assert not filters.matches("data.csv.bak", 1)
        assert not filters.matches("csv", 1)

    def test_mime_exact_and_prefix(self):
        filters = FileFilters(mime_types=("image/", "text/csv"))
        assert filters.matches("a", 1, "image/png")
        assert filters.matches("a", 1, "text/csv; charset=utf-8")
        assert not filters.matches("a", 1, "text/plain")
        assert not filters.matches("a", 1, None)

    def test_max_size_is_inclusive(self):
        filters = FileFilters(max_size=10)
        assert filters.matches("a", 10)
        assert not filters.matches("a", 11)

    def test_all_filters_must_pass(self):
        filters = FileFilters(extensions=("png",), mime_types=("image/",), max_size=5)
        assert filters.matches("a.png", 5, "image/png")
        assert not filters.matches("a.png", 6, "image/png")
        assert not filters.matches("a.jpg", 5, "image/jpeg")

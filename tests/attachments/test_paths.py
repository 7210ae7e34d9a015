from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attachments import paths
from attachments.paths import (
    UnsafePath,
    client_file_name,
    safe_join,
    sanitize_filename,
)


class TestSafeJoin:
    def test_joins_inside_base(self, tmp_path: Path):
        assert safe_join(tmp_path, "a", "b.txt") == tmp_path / "a" / "b.txt"

    def test_normalises_harmless_dots(self, tmp_path: Path):
        assert safe_join(tmp_path, "a/./b/../c") == tmp_path / "a" / "c"

    def test_refuses_parent_traversal(self, tmp_path: Path):
        with pytest.raises(UnsafePath):
            safe_join(tmp_path, "../etc/passwd")

    def test_refuses_traversal_hidden_in_the_middle(self, tmp_path: Path):
        with pytest.raises(UnsafePath):
            safe_join(tmp_path, "a/../../etc")

    def test_refuses_absolute_parts(self, tmp_path: Path):
        with pytest.raises(UnsafePath):
            safe_join(tmp_path, "/etc/passwd")

    def test_refuses_nul_bytes(self, tmp_path: Path):
        with pytest.raises(UnsafePath):
            safe_join(tmp_path, "a\x00b")

    def test_refuses_sibling_with_common_prefix(self, tmp_path: Path):
        base = tmp_path / "session_a"
        with pytest.raises(UnsafePath):
            safe_join(base, "../session_ab/x")

    def test_resolve_inside_refuses_symlink_escape(self, tmp_path: Path):
        base = tmp_path / "base"
        base.mkdir()
        outside = tmp_path / "secret.txt"
        outside.write_text("secret")
        (base / "link").symlink_to(outside)
        with pytest.raises(UnsafePath):
            paths.resolve_inside(base, base / "link")

    def test_resolve_inside_accepts_link_within(self, tmp_path: Path):
        (tmp_path / "real.txt").write_text("x")
        (tmp_path / "link").symlink_to(tmp_path / "real.txt")
        assert (
            paths.resolve_inside(tmp_path, tmp_path / "link") == (tmp_path / "real.txt").resolve()
        )


class TestSessionDir:
    @pytest.mark.parametrize("session_id", ["abc", "A-b_9", "x" * 64])
    def test_valid_ids(self, tmp_path: Path, session_id: str):
        assert paths.session_dir(tmp_path, session_id) == tmp_path / f"session_{session_id}"

    @pytest.mark.parametrize(
        "session_id", ["", "x" * 65, "../x", "a/b", "a.b", "a b", "a\x00", "é", "a%2Fb"]
    )
    def test_invalid_ids(self, tmp_path: Path, session_id: str):
        with pytest.raises(UnsafePath):
            paths.session_dir(tmp_path, session_id)


class TestSanitizeFilename:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("spec.md", "spec.md"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\windows\\system.ini", "system.ini"),
            ("a\r\nContent-Type: x.txt", "aContent-Type_ x.txt"),
            ('say "hi".txt', "say _hi_.txt"),
            ("..", "file"),
            ("", "file"),
            ("   ", "file"),
            ("\x00\x01", "file"),
            ("résumé 履歴書.pdf", "résumé 履歴書.pdf"),
            ("evil\u202egnp.exe", "evilgnp.exe"),
        ],
    )
    def test_examples(self, given: str, expected: str):
        assert sanitize_filename(given) == expected

    def test_long_names_keep_their_extension(self):
        name = sanitize_filename("a" * 300 + ".csv")
        assert name.endswith(".csv")
        assert len(name.encode()) <= paths.MAX_NAME_BYTES

    def test_long_unicode_names_are_cut_on_character_boundaries(self):
        name = sanitize_filename("履" * 300 + ".txt")
        assert len(name.encode()) <= paths.MAX_NAME_BYTES
        assert name.encode().decode() == name

    @given(st.text(max_size=400))
    def test_any_name_is_one_safe_component(self, name: str):
        clean = sanitize_filename(name)
        assert clean not in {"", ".", ".."}
        assert "/" not in clean and "\\" not in clean and "\x00" not in clean
        assert not any(ch in clean for ch in "\r\n\t")
        assert 0 < len(clean.encode("utf-8")) <= paths.MAX_NAME_BYTES
        assert safe_join("/base", clean).parent == Path("/base")


@given(st.text(max_size=100))
def test_a_safe_component_never_holds_a_separator_or_control_character(name: str):
    clean = paths.safe_component(name)
    assert clean not in {"", ".", ".."}
    assert "/" not in clean and "\\" not in clean
    assert not paths.has_unsafe_characters(clean)
    assert paths.safe_component(".gitignore") == ".gitignore"


def test_display_name_keeps_the_original_but_nul():
    assert paths.display_name('../../a "b"\r\n.txt') == '../../a "b"\r\n.txt'
    assert paths.display_name("a\x00b") == "ab"
    assert len(paths.display_name("x" * 5000)) == paths.MAX_DISPLAY_NAME_CHARS


class TestOpenInside:
    def test_opens_a_file_inside(self, tmp_path: Path):
        (tmp_path / "a.txt").write_bytes(b"data")
        with paths.open_inside(tmp_path, tmp_path / "a.txt") as file:
            assert file.read() == b"data"

    def test_follows_a_link_that_stays_inside(self, tmp_path: Path):
        (tmp_path / "a.txt").write_bytes(b"data")
        (tmp_path / "link").symlink_to(tmp_path / "a.txt")
        with paths.open_inside(tmp_path, tmp_path / "link") as file:
            assert file.read() == b"data"

    def test_refuses_a_link_leading_outside(self, tmp_path: Path):
        base = tmp_path / "base"
        base.mkdir()
        (tmp_path / "secret.txt").write_text("secret")
        (base / "link").symlink_to(tmp_path / "secret.txt")
        with pytest.raises(UnsafePath):
            paths.open_inside(base, base / "link")

    def test_refuses_a_directory(self, tmp_path: Path):
        (tmp_path / "dir").mkdir()
        with pytest.raises(paths.NotARegularFile):
            paths.open_inside(tmp_path, tmp_path / "dir")

    def test_refuses_a_hard_link_to_a_file_outside(self, tmp_path: Path):
        base = tmp_path / "base"
        base.mkdir()
        (tmp_path / "db.sqlite3").write_text("secret")
        os.link(tmp_path / "db.sqlite3", base / "copy")
        with pytest.raises(paths.NotARegularFile):
            paths.open_inside(base, base / "copy")

    def test_refuses_a_fifo_without_waiting_for_a_writer(self, tmp_path: Path):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(paths.NotARegularFile):
            paths.open_inside(tmp_path, tmp_path / "fifo")

    def test_missing_file(self, tmp_path: Path):
        with pytest.raises(FileNotFoundError):
            paths.open_inside(tmp_path, tmp_path / "gone.txt")


def test_generated_session_ids_are_valid_and_never_read_as_options():
    from attachments.identifiers import new_session_id

    ids = [new_session_id() for _ in range(2000)]
    assert all(paths.is_valid_session_id(i) and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_generated_session_tokens_never_read_as_options():
    from attachments.identifiers import new_session_token

    tokens = [new_session_token() for _ in range(2000)]
    assert not any(t.startswith("-") for t in tokens)
    assert len(set(tokens)) == len(tokens) and {len(t) for t in tokens} == {43}


class TestClientFileName:
    """Names as browsers, curl and requests write them in a multipart header."""

    @pytest.mark.parametrize(
        ("sent", "name"),
        [
            ("say %22hi%22.txt", 'say "hi".txt'),
            ("two%0D%0Alines.txt", "twolines.txt"),
            ("a%0Ab.txt", "ab.txt"),
            ("100%25.txt", "100%25.txt"),  # only the three escapes a browser writes
            ("%2e%2e", "%2e%2e"),
            ("lower %0a %22", 'lower %0a "'),
            ("&quot;x&quot;.txt", '"x".txt'),  # Django's parser unescapes HTML entities
            ("dir/sub\\name%22.txt", 'name".txt'),
            ("%0D%0A", None),
            (".%0A.", None),
            ("..", None),
            ("", None),
        ],
    )
    def test_examples(self, sent: str, name: str | None):
        assert client_file_name(sent) == name

    @given(st.text(alphabet=st.sampled_from(list('ab./\\%"02ADa&;quot\n\x00 ')), max_size=24))
    def test_never_a_separator_a_control_character_or_a_dot_name(self, sent: str):
        name = client_file_name(sent)
        assert name is None or (
            name not in {"", ".", ".."}
            and not set(name) & {"/", "\\"}
            and all(ch.isprintable() for ch in name)
        )

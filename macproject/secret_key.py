"""
The per-installation secret key file: made once, readable by its owner only.

`scripts/serve` runs `python -m macproject.secret_key <file>` when
MAC_SECRET_KEY is unset; settings then read the key from MAC_SECRET_KEY_FILE.
Every worker of one installation reads the same file, so signed links and
Django sessions hold across workers and restarts, and no two installations
share a key. No Django import: settings import this module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path

# What SECRET_KEY is when neither MAC_SECRET_KEY nor a key file is given: fine
# for tests and DEBUG, refused elsewhere by the check `attachments.E030`
# (Django's own `security.W009` flags the same prefix).
PLACEHOLDER = "django-insecure-embedded-default-set-MAC_SECRET_KEY"
KEY_BYTES = 50


class KeyFileError(RuntimeError):
    pass


def read_key_file(path: str | os.PathLike[str]) -> str:
    """The key in `path`; refuses a file that others than its owner may read or write."""
    with open(path, encoding="ascii") as source:
        mode = os.fstat(source.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} is readable or writable by others (mode {stat.filemode(mode)}); "
                "chmod 600 it."
            )
        key = source.read().strip()
    if len(key) < 50:
        raise KeyFileError(f"{path} holds no usable key (fewer than 50 characters).")
    return key


def ensure_key_file(path: str | os.PathLike[str]) -> Path:
    """
    Create `path` with a new random key unless it exists. Safe when several
    processes start at once: the key is written to a temporary file and
    linked into place, so exactly one key wins and none is ever half-written.
    """
    target = Path(path)
    if target.exists():
        read_key_file(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as sink:
            sink.write(secrets.token_urlsafe(KEY_BYTES) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    read_key_file(target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m macproject.secret_key <key file>", file=sys.stderr)
        return 2
    try:
        ensure_key_file(argv[1])
    except (OSError, KeyFileError) as exc:
        print(f"Cannot use the secret key file: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

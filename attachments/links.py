"""
Signed, expiring links to one artifact or to the session zip.

A link carries `sig=<expires_in>:<timestamp>:<signature>`, made by Django's
`TimestampSigner` with a salt per purpose that also names the session and
the artifact (and, for an artifact, its `mode` and `download` flag), so a
signature opens exactly the URL it was made for and nothing else. It
expires after the `expires_in` it was made with, and never later than
`ATTACHMENTS_SIGNED_LINK_MAX_AGE` (lowering that setting shortens links
already handed out). Rotating `SECRET_KEY` (without keeping the old one
in `SECRET_KEY_FALLBACKS`) revokes them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core import signing

from .conf import conf

SIGNATURE_PARAM = "sig"


@dataclass(frozen=True)
class LinkTarget:
    """
    What a link opens: the session zip (`artifact_id=None`) or one artifact by
    its id, and for an artifact how (`variant`, see `artifact_variant()`).
    """

    session_id: str
    artifact_id: str | None = None
    variant: str = ""

    @property
    def salt(self) -> str:
        if self.artifact_id is None:
            return f"attachments.links.download:{self.session_id}"
        return f"attachments.links.artifact:{self.session_id}:{self.artifact_id}:{self.variant}"


def artifact_variant(mode: str, download: bool) -> str:
    """The part of an artifact link's salt that binds its `mode` and `download` parameters."""
    return f"{mode}/{'download' if download else 'inline'}"


def link_lifetime(requested: int | None) -> int:
    """The seconds a new link lives: `requested`, capped by the setting."""
    limit = conf.SIGNED_LINK_MAX_AGE
    return limit if requested is None else min(requested, limit)


def sign(target: LinkTarget, expires_in: int) -> str:
    """The `sig` value of a link to `target`, valid for `expires_in` seconds from now."""
    return signing.TimestampSigner(salt=target.salt).sign(str(expires_in))


def is_valid(signature: str, target: LinkTarget) -> bool:
    """Whether `signature` was made for `target` and has not expired."""
    signer = signing.TimestampSigner(salt=target.salt)
    try:
        expires_in = int(signer.unsign(signature))
        signer.unsign(signature, max_age=min(expires_in, conf.SIGNED_LINK_MAX_AGE))
    except (signing.BadSignature, ValueError):
        return False
    return True

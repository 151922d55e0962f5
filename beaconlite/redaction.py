"""Secrets never reach a log line, a database row, an error or a notification."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+(?::[^/\s@]*)?@")


class Redactor:
    """Replaces every known secret (longest first) and any URL credentials with ***."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, more: Iterable[str]) -> None:
        # Very short values would mask innocent text everywhere; a 1-2 char secret is no secret.
        found = set(self.secrets) | {s for s in more if len(s) >= 3}
        self.secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        text = scrub(text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _URL_CREDENTIALS.sub(MASK + "@", text)


def scrub(text: str) -> str:
    """Text that can be stored and printed: lone surrogates (which UTF-8 cannot encode, so
    SQLite and a log stream would refuse the whole string) become visible escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str, limit: int = 500) -> str:
    """An error for a row or a log line: one line, bounded."""
    text = " ".join(scrub(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

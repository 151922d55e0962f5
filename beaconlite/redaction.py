"""Secrets never reach a string beaconlite writes: the one redaction pass.

Every string that leaves for the database, a log line, a notification, a CLI answer or a
web page goes through a ``Redactor`` *before* it is cut, folded onto one line or joined
with others (``Redactor.line`` does the folding itself, in that order; ``Redactor.tree``
walks a summary or a payload). A secret is every ``${ENV}`` value of the config, every
header value a run sends, and URL credentials. It is caught as written, line by line when
it spans lines, and in the encodings beaconlite itself produces (URL percent-encoding, JSON
string escaping, HTML escaping on the web pages). A text that begins where something was
cut off (an output tail) has a secret's cut-off end masked too. Secrets of one or two
characters are not masked: they would mask everything.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET = 3  # shorter values would mask innocent text everywhere
# What the URL encoders a run's requests go through leave as is: everything encoded;
# quote()'s default; requests' requote_uri; urllib3 for a path or a query (RFC 3986).
_URL_SAFE = ("", "/", "!#$%&'()*+,/:;=?@[]~", "!$&'()*+,;=:@/?~")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+(?::[^/\s@]*)?@")


def variants(secret: str) -> set[str]:
    """The forms a secret may take in what beaconlite writes."""
    found = {secret, " ".join(secret.split())}  # as written; folded onto one line
    found |= {line.strip() for line in secret.splitlines()}  # a PEM key, line by line
    for form in list(found):
        found |= {quote_plus(form)} | {quote(form, safe=safe) for safe in _URL_SAFE}
        found |= {json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1], html.escape(form)}
    return {v for v in found if len(v) >= MIN_SECRET}


class Redactor:
    """Replaces every known secret (longest form first) and any URL credentials with ***."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, more: Iterable[str]) -> None:
        found = set(self.secrets)
        for secret in more:
            if isinstance(secret, str) and len(secret) >= MIN_SECRET:
                found |= variants(secret)
        self.secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str | None, *, cut_before: bool = False) -> str | None:
        """``text`` with every secret masked; ``cut_before``: it begins where a longer text
        was cut, so a secret's last characters at its start are masked too."""
        if not text:
            return text
        text = scrub(text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        if cut_before:
            text = self._mask_cut_start(text)
        return _URL_CREDENTIALS.sub(MASK + "@", text)

    def _mask_cut_start(self, text: str) -> str:
        longest = 0
        for secret in self.secrets:
            for k in range(min(len(secret) - 1, len(text)), max(longest, MIN_SECRET - 1), -1):
                if text.startswith(secret[-k:]):
                    longest = k
                    break
        return MASK + text[longest:] if longest else text

    def line(self, text: str, limit: int = 500) -> str:
        """One bounded line for a row or a log: masked first, then folded and cut."""
        return one_line(self(scrub(str(text))) or "", limit)

    def tree(self, value: Any) -> Any:
        """A JSON-like value with every string in it (keys too) masked."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        if isinstance(value, dict):
            return {self.tree(k): self.tree(v) for k, v in value.items()}
        return value


def scrub(text: str) -> str:
    """Text that can be stored and printed: lone surrogates (which UTF-8 cannot encode, so
    SQLite and a log stream would refuse the whole string) become visible escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str, limit: int = 500) -> str:
    """One line, bounded. Redact before calling this (``Redactor.line``): a cut or a fold
    could otherwise leave a piece of a secret that no longer matches it."""
    text = " ".join(scrub(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

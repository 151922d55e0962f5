"""Secrets never reach a written string."""

from __future__ import annotations

from beaconlite.redaction import Redactor, one_line, scrub


def test_known_secrets_longest_first_and_url_credentials():
    redact = Redactor(["s3cret", "s3cret-and-more", "ab"])
    assert redact("token s3cret-and-more and s3cret") == "token *** and ***"
    assert redact("https://user:pw@example.com/x") == "https://***@example.com/x"
    assert redact("ab is too short to be a secret") == "ab is too short to be a secret"
    redact.add(["late-one"])
    assert redact("late-one") == "***"


def test_scrub_makes_lone_surrogates_visible():
    assert scrub("ok \udcff") == "ok \\udcff"
    assert scrub("plain") == "plain"


def test_one_line_folds_and_bounds():
    assert one_line("a\nb\t c") == "a b c"
    assert one_line("x" * 600) == "x" * 499 + "…"

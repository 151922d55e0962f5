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


def test_a_text_cut_inside_a_secret_has_that_piece_masked():
    secret = "k8Zq-19xPL0wQ7m"
    redact = Redactor([secret])
    for cut in range(1, len(secret)):
        text = secret[cut:] + " and then the rest"
        masked = redact(text, cut_before=True)
        if len(secret) - cut >= 3:
            assert masked == "*** and then the rest", cut
        assert secret[-6:] not in masked
    assert redact("no secret here", cut_before=True) == "no secret here"


def test_multi_line_and_encoded_forms():
    pem = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\nEEEEFFFFGGGG\n-----END KEY-----"
    redact = Redactor([pem, 'a"b\\c d/e'])
    assert redact(f"key: {pem}") == "key: ***"
    assert redact("just EEEEFFFFGGGG") == "just ***"  # a line of it alone
    assert redact(" ".join(pem.split())) == "***"  # folded
    assert redact('{"s": "a\\"b\\\\c d/e"}') == '{"s": "***"}'  # JSON-escaped
    assert redact("?q=a%22b%5Cc+d%2Fe and /a%22b%5Cc%20d/e") == "?q=*** and /***"  # URL-encoded


def test_line_masks_before_it_folds_and_cuts():
    redact = Redactor(["line one\nline two"])
    assert redact.line("x " + "line one\nline two" + " y") == "x *** y"
    long = "e" * 495 + "SECRETVALUE"
    assert "SECR" not in Redactor(["SECRETVALUE"]).line(long)


def test_tree_masks_keys_and_values():
    redact = Redactor(["s3cret"])
    assert redact.tree({"k s3cret": ["s3cret", 1, {"x": "a s3cret"}]}) == {
        "k ***": ["***", 1, {"x": "a ***"}]
    }

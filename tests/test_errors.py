"""The error tree: messages never carry secrets; diagnostics format as file:line:col."""

import string

from hypothesis import given
from hypothesis import strategies as st

from engine import secrets
from engine.errors import (
    AllCandidatesFailedError,
    AttemptRecord,
    Diagnostic,
    RateLimitedError,
    redact,
)
from engine.secrets import Secret


def test_redact_removes_known_secret_and_key_shapes() -> None:
    """A known secret and anything shaped like a provider key are both masked."""
    text = redact("key abc-CANARY-123 and sk-proj-abcdefghijklmnop", ["abc-CANARY-123"])
    assert "CANARY" not in text and "sk-proj" not in text


@given(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1))
def test_lowercase_alphanumeric_text_never_looks_like_a_key(text: str) -> None:
    """`redact` returns such texts unscanned: no key pattern can match one of them."""
    assert secrets._KEY_PATTERNS.search(text) is None
    assert redact(text) == text


def test_a_key_is_masked_even_with_lowercase_around_it() -> None:
    """The unscanned shortcut never covers a text with a key in it."""
    assert redact("requestsk-abcdefghijklmnop") == "request***"
    assert redact("aizaxAIzaSyA0123456789abcdefghijk") == "aizax***"


def test_provider_error_message_is_redacted() -> None:
    """A provider error echoing a key never shows it."""
    err = RateLimitedError("Incorrect API key provided: sk-abcdefghijklmnopqrstu", provider="x")
    assert "sk-abc" not in str(err) and "sk-abc" not in repr(err)
    assert err.retryable and err.status == 429


def test_all_failed_lists_every_attempt() -> None:
    """The final error names each attempt with its outcome."""
    err = AllCandidatesFailedError(
        [
            AttemptRecord("a", "m1", "timeout", status=504),
            AttemptRecord("b", "m2", "rate_limited", status=429),
        ]
    )
    assert "a/m1: timeout" in str(err) and "b/m2: rate_limited" in str(err)
    assert err.last_status == 429


def test_diagnostic_format() -> None:
    """Diagnostics print as file:line:col: path: message (hint)."""
    d = Diagnostic(
        "unknown key", "routes/a.yaml", 3, 5, "retry.attemps", "did you mean `attempts`?"
    )
    assert (
        d.format()
        == "routes/a.yaml:3:5: retry.attemps: unknown key (hint: did you mean `attempts`?)"
    )


def test_secret_never_prints() -> None:
    """repr, str and format of a Secret hide the value."""
    s = Secret("CANARY-KEY")
    assert "CANARY" not in f"{s} {s!r} {s:>10}" and s.reveal() == "CANARY-KEY"


def test_provider_timeout_is_a_builtin_timeout() -> None:
    """`except TimeoutError` catches a provider timeout, with its phase and no key."""
    from engine.errors import ProviderTimeoutError

    err = ProviderTimeoutError("slow with sk-abcdefghijklmnopqrstu", phase="first_token")
    assert isinstance(err, TimeoutError) and err.phase == "first_token"
    assert err.retryable and "sk-abc" not in str(err)

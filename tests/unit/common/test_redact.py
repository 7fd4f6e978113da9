"""Prompts are never logged unless asked for, and then only masked and short."""

from pydantic import BaseModel, ValidationError

from contracts import Message
from services.common.redact import content_for_log, redact, validation_summary


def test_off_logs_nothing() -> None:
    assert content_for_log("off", [Message(role="user", content="my secret plan")]) == {}


def test_redacted_is_short_and_masks_emails_and_digits() -> None:
    text = "mail jane.doe+x@example.co.uk my card 4111 1111 1111 1111 please, and more text"
    out = redact(text)
    assert "jane" not in out and "example" not in out and "4111" not in out
    assert out.startswith("mail <email> my card ####") and out.endswith("…")
    assert len(out) == 41


def test_the_last_message_is_the_one_shown() -> None:
    messages = [
        Message(role="system", content="system prompt"),
        Message(role="user", content=[{"type": "text", "text": "call 555-0100"}]),
    ]
    assert content_for_log("redacted", messages) == {"prompt": "call ###-####"}


def test_validation_errors_are_summarised_without_their_values() -> None:
    class M(BaseModel):
        n: int

    try:
        M.model_validate({"n": "secret text"})
    except ValidationError as exc:
        summary = validation_summary(exc)
    assert "secret" not in summary and summary.startswith("n: ")

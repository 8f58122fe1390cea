"""What a dashboard password must be: long enough, and not one that is guessed early.

Guessability is zxcvbn's estimate (Dropbox's estimator, with its frequency lists of common passwords,
words and names, keyboard walks, repeats, sequences and dates), given the account's e-mail and the
product's name as words an attacker would try first. A score of 3 means about 10^8 guesses or more.
"""

from __future__ import annotations

import secrets

from zxcvbn import zxcvbn

MIN_LENGTH = 10
MAX_LENGTH = 1024
MIN_SCORE = 3
# zxcvbn refuses longer input (its matching grows faster than linearly); the head of a longer password
# is what would make it common, if anything does.
_SCORED_CHARS = 72


def problem(password: str, email: str = "") -> str | None:
    """Why ``password`` is refused for the account ``email`` (a sentence naming the password field), or
    None if it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"password: must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password: must be at most {MAX_LENGTH} characters"
    local, _, domain = email.partition("@")
    hints = [word for word in (email, local, *domain.split("."), "convolens") if word]
    result = zxcvbn(password[:_SCORED_CHARS], user_inputs=hints)
    if result["score"] >= MIN_SCORE:
        return None
    warning = (result["feedback"].get("warning") or "it is among the passwords tried first").rstrip(".")
    return f"password: too easy to guess ({warning[:1].lower()}{warning[1:]}); a few unrelated words make a good one"


def generated() -> str:
    """A one-time password for an admin to hand over: 120 random bits, always accepted by ``problem``."""
    return secrets.token_urlsafe(15)

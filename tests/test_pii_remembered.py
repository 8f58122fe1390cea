"""A text scrubbed before is not scrubbed again, and the result is exactly what scrubbing gives
(enrich/pii/remembered.py): the same text, the same findings, the same numbering-plan checks spent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from convolens.enrich.pii import Budget, remembered, scrub, scrub_fields
from convolens.enrich.pii.phones import CHECKS_PER_TEXT

HISTORY = [
    f"Turn {n}: my order 55{n:03d}-A never came. Call me on +44 20 7946 0958 or write to jane.roe@example.net "
    f"before Friday, the parcel was supposed to arrive at the depot on Baker Street last week. " * 4
    for n in range(120)
]
# More phone-shaped numbers than one message's checks: scrubbing it spends the budget to the end. Each is
# no phone number to libphonenumber, but shaped like one: checked, it stays; once the checks are spent,
# its shape alone decides and it goes. So what it becomes says how many checks were left for it.
MANY_NUMBERS = " ".join(f"we saw 123 456 78{n:02d} there" for n in range(CHECKS_PER_TEXT + 8))


@pytest.fixture(autouse=True)
def nothing_remembered() -> Iterator[None]:
    remembered.forget()
    yield
    remembered.forget()


def _fields(texts: list[str]) -> list[tuple[int, str, str]]:
    return [(i, "content", text) for i, text in enumerate(texts)]


def test_a_resent_history_is_scrubbed_once_with_the_same_result() -> None:
    cold_started = time.process_time()
    cold = scrub_fields(_fields(HISTORY))
    cold_cpu = time.process_time() - cold_started
    warm_started = time.process_time()
    warm = scrub_fields(_fields(HISTORY))
    warm_cpu = time.process_time() - warm_started
    assert warm == cold
    changes, found = cold
    assert len(changes) == len(HISTORY) and found == {"phone": 480, "email": 480}
    assert all("+44 20" not in text and "jane.roe" not in text and "55" in text for _, _, text in changes)
    assert warm_cpu < cold_cpu / 4, (cold_cpu, warm_cpu)


def test_a_remembered_result_spends_the_checks_it_took_and_needs_them_left() -> None:
    text = HISTORY[0]
    fresh = Budget()
    first = scrub(text, budget=fresh)
    used = CHECKS_PER_TEXT - fresh.checks
    assert used > 0
    assert scrub_fields(_fields([text])) == scrub_fields(_fields([text]))
    kept = remembered.look(remembered.digest(text))
    budget = Budget()
    assert kept is not None and remembered.spend(kept, budget)
    assert kept.text == first.text and budget.checks == CHECKS_PER_TEXT - used
    assert dict(kept.found) == first.found == {"phone": 4, "email": 4}
    # A message whose earlier texts spent the checks: the text is scrubbed again, as it would be alone.
    short = Budget(checks=used - 1)
    assert not remembered.spend(kept, short) and short.checks == used - 1


def test_a_text_that_ran_out_of_checks_is_not_remembered() -> None:
    budget = Budget()
    scrub(MANY_NUMBERS, budget=budget)
    assert budget.checks == 0
    assert scrub_fields(_fields([MANY_NUMBERS])) == scrub_fields(_fields([MANY_NUMBERS]))
    assert remembered.look(remembered.digest(MANY_NUMBERS)) is None


def test_one_message_s_texts_share_its_budget_as_without_memory() -> None:
    """An event of two fields: the second is scrubbed with what the first left, remembered or not."""
    fields = [(0, "content", HISTORY[1]), (0, "content", MANY_NUMBERS), (1, "content", HISTORY[1])]
    cold = scrub_fields(fields)
    many = [text for i, _, text in cold[0] if "we saw" in text]
    assert len(many) == 1 and "123 456 78" in many[0] and "[PHONE]" in many[0]  # checked, then shaped
    remembered.forget()
    scrub_fields([(0, "content", HISTORY[1])])  # remembered now
    assert scrub_fields(fields) == cold


def test_memory_is_bounded_to_two_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unchanged texts: an entry of ENTRY_CHARS each, twenty to a generation.
    monkeypatch.setattr(remembered, "GENERATION_CHARS", 20 * remembered.ENTRY_CHARS)
    texts = [f"{n} " + "plain words about a parcel " * 20 for n in range(100)]
    scrub_fields(_fields(texts))
    kept = [remembered.look(remembered.digest(t)) is not None for t in texts]
    assert kept[-1] and not kept[0]
    assert 20 <= sum(kept) <= 40
    # Results used again move to the newer generation under the same bound.
    for text in texts:
        remembered.look(remembered.digest(text))
    assert remembered._newer_chars <= remembered.GENERATION_CHARS

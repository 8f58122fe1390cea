"""semantic_match's near-miss checks (numbers/dates, negation, swapped names or words, refusal), each
with pairs that pass and pairs that fail with the exact reason; the checks' bound on hostile input;
attempts_answer on deflections and hard answers; bench/evaluator_quality.py on a new labelled file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convolens.evaluations import entities, polarity, quantities, registry, wording
from convolens.evaluations.base import Attempt, Message
from convolens.evaluations.run import ProjectServices

ROOT = Path(__file__).resolve().parents[1]


def judged(golden: str, response: str, **options):
    evaluator = registry.get("semantic_match")
    assert evaluator is not None
    checked = evaluator.check_options({"golden_response": golden, **options})
    return evaluator.evaluate(Attempt((Message("user", "?"),), response), checked, ProjectServices(None))


@pytest.mark.parametrize(
    ("golden", "response"),
    [
        ("Delivery takes 5 to 7 business days.", "Expect five to seven working days."),
        ("We're open from 9am to 6pm.", "Our hours are 9:00 to 18:00."),
        ("The store closes at 18:00.", "The store closes at \uff16pm."),  # a full-width 6
        ("The fee is waived above $1,000.", "Sem taxa acima de US$ 1.000."),
        ("Your parcel arrives within 48 hours.", "Votre colis arrive sous deux jours."),
        ("The package weighs 2 kilograms.", "It weighs 2000 grams."),
        ("Water boils at 100 degrees Celsius.", "Water boils at 212°F."),
        ("The flight takes two and a half hours.", "The flight takes 150 minutes."),
        ("Wait 30 seconds, then reconnect.", "Wait half a minute, then reconnect."),
        ("東京から大阪までは約2時間30分です。", "東京から大阪までは2時間半です。"),
        ("The meeting is on Thursday at 10am.", "Nous avons la réunion jeudi à 10 h."),
        ("The parking closes at midnight.", "You can park until 12 am."),
        ("Support is open Monday to Friday, 9am to 5pm.", "Support is open on weekdays from 9 to 5."),
        ("Your order shipped on 3/14.", "Your order left our warehouse on March 14."),
        ("Our team replies within 24 hours.", "You'll hear back from our team within a day."),
    ],
)
def test_the_same_numbers_times_and_dates_spelled_differently_pass(golden: str, response: str) -> None:
    assert quantities.compare(golden, response) is None


@pytest.mark.parametrize(
    ("golden", "response", "reason"),
    [
        ("Delivery takes 5 to 7 business days.", "Delivery takes 2 to 3 business days.",
         "the golden response says 5, 7 where the response says 2, 3"),
        ("Cancel within 24 hours for a refund.", "Cancel within 48 hours for a refund.",
         "the golden response says 24 hours where the response says 48 hours"),
        ("We're open until 6pm.", "We're open until 5pm.", "the golden response says 6pm where the response says 5pm"),
        ("The deadline is March 15.", "The deadline is May 15.",
         "the golden response says march where the response says may"),
        ("The plan costs $1,000 a year.", "The plan costs $1,500 a year.",
         "the golden response says 1,000 where the response says 1,500"),
        ("Prices rose 20% this year.", "Prices rose 25% this year.",
         "the golden response says 20 where the response says 25"),
        ("Fixed in version 3.2.1.", "Fixed in version 3.2.2.",
         "the golden response says 3.2.1 where the response says 3.2.2"),
        ("The sale ends on 3/14.", "The sale ends on April 14.",
         "the golden response says 3 where the response says april"),
        ("You can return it within 30 days.", "You can't return it.",
         "the response leaves out 30 days of the golden response"),
        ("员工每年享有15天带薪年假。", "员工每年享有5天带薪年假。",
         "the golden response says 15 天 where the response says 5 天"),
    ],
)  # fmt: skip
def test_a_different_or_missing_number_time_or_date_fails_naming_it(golden: str, response: str, reason: str) -> None:
    assert quantities.compare(golden, response) == reason


def test_negation_flips_are_named_and_rewordings_with_other_cues_are_not() -> None:
    assert polarity.flip("You can return it within 30 days.", "You can't return it within 30 days.") == (
        "the response negates what the golden response states ('not')"
    )
    assert polarity.flip("Haustiere sind im Hotel erlaubt.", "Haustiere sind im Hotel nicht erlaubt.") == (
        "the response negates what the golden response states ('nicht')"
    )
    assert polarity.flip("这款耳机支持主动降噪功能。", "这款耳机不支持主动降噪功能。") == (
        "the response negates what the golden response states ('不')"
    )
    assert polarity.flip("The warranty does not cover water damage.", "The warranty covers water damage.") == (
        "the golden response negates what the response states ('not')"
    )
    # the same meaning with the cue moved, an antonym, and Portuguese "no" (= "in the")
    assert polarity.flip("No, the code cannot be combined with other offers.", "That code isn't stackable.") is None
    assert polarity.flip("The museum is closed on Mondays.", "On Mondays the museum does not open.") is None
    assert polarity.flip("O hotel fica no centro.", "O hotel fica no centro da cidade.") is None


def test_a_name_swapped_for_another_fails_and_a_dropped_subject_does_not() -> None:
    assert entities.swapped("The office in Madrid opens at 8.", "The office in Barcelona opens at 8.") == (
        "the golden response names madrid where the response names barcelona"
    )
    assert entities.swapped("The CEO is Maria Lopez.", "The CFO is Maria Lopez.") == (
        "the golden response names ceo where the response names cfo"
    )
    assert entities.swapped("The Eiffel Tower is 330 m tall.", "It stands about 330 m high.") is None
    assert entities.swapped("Our shop in Lisbon opens at 9.", "A loja de Lisboa abre às 9.") is None
    # German capitalises nouns: they are not names
    assert entities.swapped("Sie können das Abonnement kündigen.", "Eine Kündigung des Abos ist möglich.") is None


def test_a_near_copy_with_a_word_swapped_fails_and_a_rewording_does_not() -> None:
    assert wording.swapped(
        "The stock price rose 5% after the report.", "The stock price fell 5% after the report."
    ) == ("the response repeats the golden response with 'fell' in place of 'rose'")
    assert wording.swapped("Use git merge to combine branches.", "Use git rebase to combine branches.") == (
        "the response repeats the golden response with 'rebase' in place of 'merge'"
    )
    assert wording.swapped("Your order ships tomorrow morning.", "Your order will ship tomorrow morning.") is None
    assert (
        wording.swapped(
            "You can export your data as a CSV file from the reports page.",
            "On the reports page there's an option to download your data in CSV format.",
        )
        is None
    )


def test_a_word_turned_into_its_opposite_fails_unless_a_negation_turns_it_back() -> None:
    assert wording.opposite(
        "Pay the invoice before the goods are shipped.", "Pay the invoice after the goods are shipped."
    ) == ("the response says 'after' where the golden response says 'before'")
    assert wording.opposite("Flights to Tokyo depart from Terminal 2.", "Flights from Tokyo arrive at Terminal 2.") == (
        "the response says 'arrive' where the golden response says 'depart'"
    )
    assert wording.opposite(
        "The password must be at least 12 characters.", "The password must be at most 12 characters."
    ) == ("the response says 'most' where the golden response says 'least'")
    assert wording.opposite("The museum is closed on Mondays.", "On Mondays the museum doesn't open.") is None
    assert wording.opposite("Il museo è chiuso il lunedì.", "Di lunedì il museo non è aperto.") is None
    # the same word pair on another subject is no contradiction
    assert wording.opposite("Stir before serving.", "Our shop closes after 6 on Fridays, so come early.") is None


def test_semantic_match_reasons_name_what_differed() -> None:
    found = judged("Delivery takes 5 to 7 business days.", "Delivery takes five to seven working days.")
    assert found.outcome == "positive"
    found = judged("Delivery takes 5 to 7 business days.", "Delivery takes 2 to 3 business days.")
    assert found.outcome == "negative"
    assert found.reasons[0].reason.startswith("similarity to the golden response 0.")
    assert found.reasons[0].reason.endswith("at or above the threshold 0.56")
    assert [r.reason for r in found.reasons[1:]] == ["the golden response says 5, 7 where the response says 2, 3"]
    found = judged("You can return it within 30 days.", "You can't return it.")
    assert found.outcome == "negative"
    assert [r.reason for r in found.reasons[1:]] == [
        "the response leaves out 30 days of the golden response",
        "the response negates what the golden response states ('not')",
    ]
    # what not to say: a near miss of it is a different answer, so it passes
    avoid = judged("Delivery takes 5 to 7 business days.", "Delivery takes 2 to 3 business days.", expect="different")
    assert avoid.outcome == "positive"
    assert avoid.reasons[1].verdict is True


def test_semantic_match_rejects_a_deflection_where_the_golden_response_answers() -> None:
    golden = "You can change your delivery address in your account settings until the order ships."
    # a low threshold lets the pair through the first gate: the refusal check has to decide
    found = judged(golden, "Let me check on your delivery address and get back to you.", threshold=0.2)
    assert found.outcome == "negative"
    assert found.reasons[-1].reason.startswith("the response refuses or deflects (classifier: 0.")
    assert found.reasons[-1].reason.endswith("that it answers) where the golden response answers")
    answer = "Until your order ships, the delivery address can be edited under account settings."
    assert judged(golden, answer, threshold=0.2).outcome == "positive"


def test_the_checks_bound_their_time_on_hostile_input() -> None:
    hostile = ("1,2." * 50_000) + ("not " * 50_000) + ("Madrid " * 50_000) + ("二十" * 50_000)
    numbers = " ".join(str(i) for i in range(3000))
    shifted = " ".join(f"{i + 1} weekdays a day monthly" for i in range(3000))
    started = time.process_time()
    assert quantities.compare("It costs 5 dollars.", hostile) is not None
    # every number against every number: quadratic, so the items each text yields are capped
    assert quantities.compare(numbers, shifted) == "the golden response says 0 where the response says 100"
    polarity.flip("It costs 5 dollars.", hostile)
    entities.swapped("It costs 5 dollars in Paris.", hostile)
    wording.swapped("It costs 5 dollars.", hostile)
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize(
    ("response", "answers"),
    [
        ("Unfortunately the store closes at 6 on Sundays.", True),
        ("No, it can't be combined with other promotions.", True),
        ("Leider ist der Gutschein nicht mit anderen Rabatten kombinierbar.", True),
        ("Please contact support for help with this.", False),
        ("Let me check and get back to you.", False),
        ("I don't have access to your booking details.", False),
        ("Je vérifie et je reviens vers vous.", False),
        ("Para eso, comuníquese con nuestro servicio de atención al cliente.", False),
    ],
)
def test_attempts_answer_reads_deflections_as_refusals_and_hard_answers_as_answers(
    response: str, answers: bool
) -> None:
    evaluator = registry.get("attempts_answer")
    assert evaluator is not None
    found = evaluator.evaluate(Attempt((Message("user", "?"),), response), {"method": "classifier"},
                               ProjectServices(None))  # fmt: skip
    assert found.outcome == ("positive" if answers else "negative")


def test_the_bench_measures_a_new_labelled_file_on_its_own(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in [
        {"lang": "en", "a": "Delivery takes 5 to 7 business days.", "b": "Expect five to seven working days.",
         "paraphrase": True},
        {"lang": "en", "a": "Delivery takes 5 to 7 business days.", "b": "Delivery takes 2 to 3 business days.",
         "paraphrase": False},
    ]))  # fmt: skip
    rows = tmp_path / "attempts.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"lang": "en", "label": "answer", "response": "No, we don't ship to Canada."},
        {"lang": "en", "label": "refusal", "response": "Please contact our support team."},
    ]))  # fmt: skip
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    bench = str(ROOT / "bench" / "evaluator_quality.py")
    out = subprocess.run(
        [sys.executable, bench, "--set", str(pairs), "--attempts-set", str(rows)],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "  pairs.jsonl                     2 pairs  precision 1.000  recall 1.000  F1 1.000  accuracy 1.000" in out
    assert "  similarity alone                2 pairs  precision 0.500  recall 1.000  F1 0.667  accuracy 0.500" in out
    assert (
        "  attempts.jsonl                  2 responses  precision 1.000  recall 1.000  F1 1.000  accuracy 1.000" in out
    )
    assert "paraphrase_pairs_tune" not in out  # only the new file

"""A user message that states a number the previous reply did not contradicts it (enrich/sentiment.py,
``NEUTRAL_NUMBER_CONFLICT``): its neutral chance is cut harder than after any other statement."""

from __future__ import annotations

from convolens.enrich import embedding, sentiment


def test_numbers_the_reply_did_not_state_are_a_contradiction() -> None:
    assert sentiment.contradicts_numbers("My ticket says 9:50.", "The train leaves at 9:15.")
    assert sentiment.contradicts_numbers("3月15日では\uff1f", "確定申告の期限は4月15日です。")
    # The same numbers, no number in the reply, or none in the message: no contradiction.
    assert not sentiment.contradicts_numbers("So 9:15 it is.", "The train leaves at 9:15.")
    assert not sentiment.contradicts_numbers("My ticket says 9:50.", "The train leaves in the morning.")
    assert not sentiment.contradicts_numbers("My ticket says otherwise.", "The train leaves at 9:15.")


def test_a_number_against_the_reply_is_read_as_more_negative_than_the_same_message_after_no_number() -> None:
    text = "Mine is at 9:50."
    # Two statements, the same but for the number: only the contradiction differs.
    replies = [
        "The train to Ghent leaves at 9:15 from the main platform.",
        "The train to Ghent leaves from the main platform.",
    ]
    vectors = embedding.embed([text, text])
    contradicting, plain = sentiment.probabilities_in_turn([text, text], vectors, replies)
    assert contradicting[1] < plain[1] and contradicting[0] > plain[0]
    assert sentiment._turn_prior(text, replies[0]) == sentiment.NEUTRAL_NUMBER_CONFLICT
    assert sentiment._turn_prior(text, replies[1]) == sentiment.NEUTRAL_AFTER_STATEMENT


def test_a_message_quoting_the_reply_back_is_read_as_more_negative() -> None:
    reply = "Preheat the oven to 200 degrees and add two spoons of sugar to the sauce."
    quoting, other = "two spoons of sugar to the sauce?", "and the pasta water?"
    assert sentiment.echoes(quoting, reply) and not sentiment.echoes(other, reply)
    assert not sentiment.echoes(quoting, "Do you want two spoons of sugar to the sauce?")  # it asked: an answer
    vector = embedding.embed([quoting])
    echoed, asked = sentiment.probabilities_in_turn([quoting, quoting], vector.repeat(2, axis=0), [reply, "Done."])
    assert echoed[0] > asked[0]


def test_numbers_are_bounded() -> None:
    many = " ".join(str(i) for i in range(10_000))
    assert len(sentiment._numbers(many)) == sentiment.MAX_NUMBERS

"""clean_for_speech and is_speakable: markdown, emoji, control characters, piper syntax."""

from __future__ import annotations

import pytest

from assistant.text.speakable import clean_for_speech, is_speakable


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**Bold** and __strong__ text", "Bold and strong text"),
        ("*italic* and _emphasis_ here", "italic and emphasis here"),
        ("***both*** at once", "both at once"),
        ("keep my_var_name and 2 * 3 and 2*3", "keep my_var_name and 2 * 3 and 2*3"),
        ("Run `pip install` now", "Run pip install now"),
        ("See [the docs](https://example.org/a_b) today", "See the docs today"),
        ("~~old~~ new", "old new"),
        ("# Heading\nBody text.", "Heading. Body text."),
        ("## Title ##", "Title"),
        ("> quoted line", "quoted line"),
        ("- Eggs\n- Milk\n* Flour\n+ Salt", "Eggs. Milk. Flour. Salt"),
        ("1. First\n2) Second\n10. Tenth", "First. Second. Tenth"),
        ("You need:\n- eggs, \n- milk!", "You need: eggs, milk!"),
        ("```python\nprint(1)\n```", "print(1)"),
        ("Above\n\n---\n\nBelow", "Above. Below"),
        ("foo \u2014 bar - baz", "foo, bar, baz"),
        ("pages 2\u20133 and -5 degrees", "pages 2\u20133 and -5 degrees"),
        ("  lots   of\t\tspace  ", "lots of space"),
    ],
)
def test_markdown_is_cleaned(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("Great \U0001f600!", "Great!"),
        ("Family \U0001f468\u200d\U0001f469\u200d\U0001f467 time", "Family time"),
        ("Thumbs \U0001f44d\U0001f3fd up", "Thumbs up"),
        ("Flag \U0001f1eb\U0001f1f7 and \u2764\ufe0f and \u2705 done", "Flag and and done"),
        ("Keycap 1\ufe0f\u20e3 one", "Keycap 1 one"),
        ("Stars \u2b50\u2728", "Stars"),
    ],
)
def test_emoji_are_removed(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


def test_control_and_format_characters_are_removed() -> None:
    assert clean_for_speech("a\x00b\x07c\u200bd\u00ade\ufeff") == "abcde"
    assert clean_for_speech("one\r\ntwo\rthree\x0bfour\u2028five") == "one. two. three. four. five"
    assert clean_for_speech("tab\tseparated") == "tab separated"


def test_lone_surrogates_do_not_raise() -> None:
    assert clean_for_speech("x\ud800y\udfffz") == "xyz"


def test_piper_phoneme_brackets_never_survive() -> None:
    assert clean_for_speech("Say [[ h @ l oU ]] now") == "Say h @ l oU now"
    for raw in ("[[[x]]]", "[[", "a]]b", "[[[[ ]]"):
        cleaned = clean_for_speech(raw)
        assert "[[" not in cleaned and "]]" not in cleaned


@pytest.mark.parametrize(
    "raw",
    ["", " ", "\n\n", "\U0001f600", "\U0001f389" * 50, "**", "```", "---", "- ", "# ", "[[ ]]", "\x00\x01"],
)
def test_nothing_to_say(raw: str) -> None:
    assert not is_speakable(raw)
    assert not any(ch.isalnum() for ch in clean_for_speech(raw))


@pytest.mark.parametrize("raw", ["a", "42", "Hello \U0001f600", "**x**", "\u00e9t\u00e9", "\u4f60\u597d"])
def test_something_to_say(raw: str) -> None:
    assert is_speakable(raw)


def test_long_and_hostile_input_does_not_raise() -> None:
    long_text = "word " * 4000
    assert clean_for_speech(long_text) == ("word " * 4000).strip()
    hostile = "".join(chr(c) for c in range(0, 0x3000)) + "\ud800\U0001f600\U000e0041*_`[]()#>"
    cleaned = clean_for_speech(hostile * 3)
    assert "\x00" not in cleaned and "\n" not in cleaned and "[[" not in cleaned


def test_clean_is_stable_on_clean_text() -> None:
    text = "The capital of France is Paris, and it is 3.14 km wide."
    assert clean_for_speech(text) == text
    assert clean_for_speech(clean_for_speech("- **a** _b_\n- c")) == clean_for_speech("- **a** _b_\n- c")

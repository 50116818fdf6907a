"""SpeechChunker: where chunks end, and that the pieces' sizes never change the result."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from assistant.config import ChunkerConfig
from assistant.text.chunking import SpeechChunker, split_for_speech

CONFIG = ChunkerConfig(first_min_chars=12, min_chars=40, max_chars=220, first_break_words=0)


def feed(pieces: list[str], config: ChunkerConfig = CONFIG) -> list[str]:
    chunker = SpeechChunker(config)
    out: list[str] = []
    for piece in pieces:
        out += chunker.push(piece)
    return out + chunker.flush()


def llm_tokens(text: str) -> list[str]:
    """Pieces like an LLM's: " capital", " of", ".", "\\n"."""
    return re.findall(r"[ \t]*\w+|[ \t]*[^\w\s]+|\s", text)


def tokenizations(text: str) -> dict[str, list[str]]:
    rng = random.Random(1234)
    cuts: list[str] = []
    i = 0
    while i < len(text):
        step = rng.randint(1, 7)
        cuts.append(text[i : i + step])
        i += step
    return {
        "whole": [text],
        "chars": list(text),
        "llm": llm_tokens(text),
        "words": re.findall(r"\S+|\s+", text),
        "random": cuts,
    }


STORY = (
    "Sure! The capital of France is Paris. Pi is about 3.14, and version 1.2.3 shipped. "
    'Dr. Smith met Mr. Jones, e.g. at the U.S. embassy. He said "hi." Then he left; '
    "J. R. R. Tolkien wrote it. It cost 1,000 dollars, etc. and more. Really? Yes!\n"
    "## Steps\n1. **Preheat** the oven.\n2. Mix [flour](http://x.org/f) and `sugar`\n"
    "- Bake it \U0001f382\n\nDone \u2014 enjoy, and say [[ b O n ]] for me."
)
STORY_CHUNKS = [
    "Sure!",
    "The capital of France is Paris.",
    "Pi is about 3.14, and version 1.2.3 shipped.",
    "Dr. Smith met Mr. Jones, e.g. at the U.S. embassy.",
    'He said "hi."',
    "Then he left;",
    "J. R. R. Tolkien wrote it.",
    "It cost 1,000 dollars, etc. and more.",
    "Really?",
    "Yes!",
    "Steps",
    "Preheat the oven.",
    "Mix flour and sugar",
    "Bake it",
    "Done, enjoy, and say b O n for me.",
]


@pytest.mark.parametrize("how", ["whole", "chars", "llm", "words", "random"])
def test_any_tokenization_gives_the_same_chunks(how: str) -> None:
    assert feed(tokenizations(STORY)[how]) == STORY_CHUNKS


def test_tokenization_invariance_on_long_messy_text() -> None:
    text = (STORY + " ") * 5 + "word " * 150 + "a" * 500 + " end.\n\n" + STORY
    results = {how: feed(pieces) for how, pieces in tokenizations(text).items()}
    assert len(set(map(tuple, results.values()))) == 1
    assert all(0 < len(chunk) <= CONFIG.max_chars for chunk in results["whole"])


def test_sentences_split_token_by_token() -> None:
    pieces = ["The", " capital", " of", " France", " is", " Paris", ".", " It", " is", " big", "."]
    chunker = SpeechChunker(CONFIG)
    emitted = [chunker.push(p) for p in pieces]
    assert emitted[6] == []  # the period alone is not yet a confirmed boundary
    assert emitted[7] == ["The capital of France is Paris."]
    assert chunker.flush() == ["It is big."]
    assert chunker.chunk_count == 2


@pytest.mark.parametrize(
    ("text", "chunks"),
    [
        ("Pi is 3.14 exactly. Next one.", ["Pi is 3.14 exactly.", "Next one."]),
        ("Dr. Smith is here. Mrs. Brown too.", ["Dr. Smith is here.", "Mrs. Brown too."]),
        ("Use e.g. something small. Or not.", ["Use e.g. something small.", "Or not."]),
        ("Use fruit, i.e. Apples. Fine.", ["Use fruit, i.e. Apples.", "Fine."]),
        ("The U.S. economy grew. Fast.", ["The U.S. economy grew.", "Fast."]),
        ("The U.S. Army marched. Far.", ["The U.S. Army marched.", "Far."]),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        ("Cats vs. Dogs is old. Move on.", ["Cats vs. Dogs is old.", "Move on."]),
        ("Main St. Station is near. Go.", ["Main St. Station is near.", "Go."]),
        ("Pens, etc. and ink. Etc. Then more.", ["Pens, etc. and ink.", "Etc.", "Then more."]),
        ("Version 1.2.3 is at 10.0.0.1 now. Ok", ["Version 1.2.3 is at 10.0.0.1 now.", "Ok"]),
        ("The answer is 42. Next question.", ["The answer is 42.", "Next question."]),
        ("So do I. The end.", ["So do I.", "The end."]),
        ("Is it? Yes! Wow\u2026 Great.", ["Is it?", "Yes!", "Wow\u2026", "Great."]),
        ("Well... I think so. Ok.", ["Well...", "I think so.", "Ok."]),
        ("What?! No way.", ["What?!", "No way."]),
    ],
)
def test_sentence_boundaries(text: str, chunks: list[str]) -> None:
    assert split_for_speech(text, CONFIG) == chunks
    assert feed(list(text)) == chunks


@pytest.mark.parametrize(
    ("text", "chunks"),
    [
        ('He said "hi." Then he left.', ['He said "hi."', "Then he left."]),
        ("She asked \u201cwhy?\u201d Nobody knew.", ["She asked \u201cwhy?\u201d", "Nobody knew."]),
        ("It is big (very big.) Next.", ["It is big (very big.)", "Next."]),
        ("It is **important.** Listen.", ["It is important.", "Listen."]),
    ],
)
def test_closing_quotes_and_brackets_stay_with_the_sentence(text: str, chunks: list[str]) -> None:
    assert split_for_speech(text, CONFIG) == chunks


def test_numbers_with_commas_are_not_split() -> None:
    text = "The total came to exactly 1,000,000 dollars in the end."
    assert split_for_speech(text, CONFIG) == [text]


def test_first_chunk_ends_at_a_comma_early_later_ones_only_when_long() -> None:
    text = (
        "Well, the capital of France, as you know, is Paris. "
        "After that, the river flows through the old town centre, and then it reaches the sea."
    )
    assert split_for_speech(text, CONFIG) == [
        "Well, the capital of France,",  # 28 >= first_min_chars; "Well," (5) is too short
        "as you know, is Paris.",  # "as you know," is 12 chars: long enough only for a first chunk
        "After that, the river flows through the old town centre,",  # >= min_chars
        "and then it reaches the sea.",
    ]


def test_clause_breaks_colon_paren_dash() -> None:
    config = ChunkerConfig(first_min_chars=5, min_chars=10, max_chars=220)
    text = "Here it is: the plan (version two) starts now \u2014 and ends well - I hope so."
    assert split_for_speech(text, config) == [
        "Here it is:",
        "the plan (version two)",
        "starts now,",
        "and ends well,",
        "I hope so.",
    ]
    assert split_for_speech("At 12:30 we go.", config) == ["At 12:30 we go."]


def test_first_chunk_rule_applies_again_after_reset() -> None:
    chunker = SpeechChunker(CONFIG)
    assert chunker.push("Alright then, let us begin. ") == ["Alright then,"]
    assert chunker.push("Alright then, let us begin. ") == ["let us begin."]
    assert chunker.flush() == ["Alright then, let us begin."]
    assert chunker.chunk_count == 3
    chunker.reset()
    assert chunker.chunk_count == 0
    assert chunker.push("Alright then, let us begin. ") == ["Alright then,"]


def test_markdown_lists_become_separate_chunks() -> None:
    assert split_for_speech("1. First\n2. Second\n3) Third", CONFIG) == ["First", "Second", "Third"]
    text = "You need:\n- **eggs**\n- milk\n* flour, sifted\n\nThen mix."
    assert split_for_speech(text, CONFIG) == ["You need:", "eggs", "milk", "flour, sifted", "Then mix."]


def test_markdown_headings_links_and_code() -> None:
    text = "# Recipe\n\nRead [the guide](https://example.org/guide.html) first. Run `make all` then.\n"
    text += "```bash\nmake all\n```\n"
    assert split_for_speech(text, CONFIG) == [
        "Recipe",
        "Read the guide first.",
        "Run make all then.",
        "make all",
    ]


def test_emoji_are_removed_and_emoji_only_reply_gives_nothing() -> None:
    assert split_for_speech("Great job \U0001f389! See you \U0001f44b\U0001f3fd.", CONFIG) == [
        "Great job!",
        "See you.",
    ]
    chunker = SpeechChunker(CONFIG)
    for piece in ["\U0001f600", " \U0001f389", "\u2764\ufe0f", "!", "\n", "\U0001f468\u200d\U0001f469"]:
        assert chunker.push(piece) == []
    assert chunker.flush() == []
    assert chunker.chunk_count == 0


def test_unspeakable_chunks_are_dropped_and_do_not_count_as_first() -> None:
    chunker = SpeechChunker(CONFIG)
    assert chunker.push("\U0001f600\n---\n**\n") == []
    assert chunker.push("Okay then you, here we go. And") == ["Okay then you,", "here we go."]


def test_piper_phoneme_syntax_is_escaped() -> None:
    chunks = split_for_speech("Say [[ h @ l oU ]] to [[[me]]]. Then stop.", CONFIG)
    assert chunks == ["Say h @ l oU to me.", "Then stop."]
    assert all("[[" not in c and "]]" not in c for c in feed(list("x [[ y ]] z [")))


def test_long_text_without_punctuation_is_cut_at_spaces() -> None:
    words = " ".join(f"word{i}" for i in range(2500))  # about 20,000 characters
    assert len(words) >= 20_000
    for pieces in ([words], llm_tokens(words)):
        chunks = feed(pieces)
        assert all(0 < len(c) <= CONFIG.max_chars for c in chunks)
        assert " ".join(chunks) == words  # cut only at spaces, nothing lost
        assert all(len(c) > CONFIG.max_chars - 10 for c in chunks[:-1])


def test_long_text_without_spaces_is_hard_cut() -> None:
    chunks = split_for_speech("x" * 20_000, CONFIG)
    assert chunks == ["x" * 220] * 90 + ["x" * 200]


def test_control_characters_and_surrogates() -> None:
    text = "Hel\x00lo\x07 there\u200b.\r\nNext\x1b line\ud800 here."
    assert split_for_speech(text, CONFIG) == ["Hello there.", "Next line here."]
    assert feed(list(text)) == ["Hello there.", "Next line here."]


def test_flush_returns_the_tail_and_empties_the_buffer() -> None:
    chunker = SpeechChunker(CONFIG)
    assert chunker.push("First sentence here. And the tail") == ["First sentence here."]
    assert chunker.flush() == ["And the tail"]
    assert chunker.flush() == []
    assert chunker.push("Unfinished.") == []  # not confirmed until more text or flush
    assert chunker.flush() == ["Unfinished."]


def test_newline_confirms_a_sentence_immediately() -> None:
    chunker = SpeechChunker(CONFIG)
    assert chunker.push("Hello there.") == []
    assert chunker.push("\n") == ["Hello there."]
    assert chunker.push("Line without end") == []
    assert chunker.push("\n") == ["Line without end"]


def test_empty_and_whitespace_input() -> None:
    assert split_for_speech("", CONFIG) == []
    assert split_for_speech(" \n\t\n ", CONFIG) == []
    assert split_for_speech("ok") == ["ok"]


BREAKS = ChunkerConfig(first_min_chars=12, min_chars=40, max_chars=220, first_break_words=4)


@pytest.mark.parametrize(
    ("text", "chunks"),
    [
        (  # ends before "from" once four words are in; later chunks keep their sentences
            "The moon is about 384,000 kilometres away from Earth. It orbits in 27 days.",
            ["The moon is about 384,000 kilometres away", "from Earth.", "It orbits in 27 days."],
        ),
        (  # "in" comes after three words only: too soon; the predicate after six
            "The tallest mountain in the world is Everest that rises high.",
            ["The tallest mountain in the world", "is Everest that rises high."],
        ),
        ("The capital of France is Paris.", ["The capital of France", "is Paris."]),
        ("Twelve times four is forty-eight.", ["Twelve times four is forty-eight."]),  # 3 words
        ("The story of Romeo and Juliet is old.", ["The story of Romeo", "and Juliet is old."]),
        ("Turn on the kitchen lights now.", ["Turn on the kitchen lights now."]),  # no break word
        (  # "into," is followed by punctuation: not the start of a phrase
            "Tell me what you walked into, then sit.",
            ["Tell me what you walked into,", "then sit."],
        ),
    ],
)
def test_first_chunk_ends_before_a_break_word(text: str, chunks: list[str]) -> None:
    for how, pieces in tokenizations(text).items():
        assert feed(pieces, BREAKS) == chunks, how


def test_break_words_count_spoken_words_and_can_be_turned_off() -> None:
    text = "Say [[ h @ l oU ]] to me please."
    assert feed([text], BREAKS) == ["Say h @ l oU", "to me please."]
    assert feed([text], CONFIG) == ["Say h @ l oU to me please."]


def test_break_words_keep_tokenization_invariance() -> None:
    results = {how: feed(pieces, BREAKS) for how, pieces in tokenizations(STORY * 2).items()}
    assert len(set(map(tuple, results.values()))) == 1


def test_two_word_first_chunks_end_before_of_and_or() -> None:
    two = replace(BREAKS, first_break_words=2)
    assert feed(["The capital of France is Paris."], two) == ["The capital", "of France is Paris."]
    assert feed(["Tea or coffee is fine."], two) == ["Tea or coffee", "is fine."]  # one word first: too soon
    assert feed(["Black tea or coffee is fine."], two) == ["Black tea", "or coffee is fine."]

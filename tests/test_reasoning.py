"""The think filter, fed piece by piece: every variant of RELIABILITY.md's Models section."""

from __future__ import annotations

import pytest

from assistant.chat.reasoning import (
    CLOSE_THINK,
    OPEN_PREFILL,
    SKIP_PREFILL,
    ThinkBudget,
    ThinkFilter,
    plan,
)


def feed(pieces: list[str], inside: bool = False) -> tuple[list[str], str, ThinkFilter]:
    """(answer output per push and at the end, all reasoning, the filter)."""
    flt = ThinkFilter(inside)
    answers, reasoning = [], []
    for piece in pieces:
        a, r = flt.push(piece)
        answers.append(a)
        reasoning.append(r)
    a, r = flt.finish()
    answers.append(a)
    reasoning.append(r)
    return answers, "".join(reasoning), flt


def chars(text: str) -> list[str]:
    return list(text)


def test_normal_block_then_answer() -> None:
    answers, reasoning, flt = feed(["<think>", "\nLet me", " think.", "</think>", "\n\n", "Paris", "."])
    assert "".join(answers) == "Paris."
    assert reasoning == "\nLet me think."
    assert flt.thought and not flt.unclosed


@pytest.mark.parametrize("split", [1, 2, 3])
def test_tags_split_across_pieces(split: int) -> None:
    text = "<think>I reason < here</think>\n\nThe answer is 4 < 5."
    pieces = [text[i : i + split] for i in range(0, len(text), split)]
    answers, reasoning, flt = feed(pieces)
    assert "".join(answers) == "The answer is 4 < 5."
    assert reasoning == "I reason < here"
    assert not any("think" in a for a in answers)


def test_missing_opening_tag_when_the_template_opened_it() -> None:
    answers, reasoning, _ = feed(chars("Hmm, 2+2.\n</think>\n\nFour."), inside=True)
    assert "".join(answers) == "Four."
    assert reasoning == "Hmm, 2+2.\n"


def test_without_the_flag_a_stray_closing_tag_is_never_spoken() -> None:
    answers, _, _ = feed(["Four.", "</th", "ink>", " Yes."])
    assert "".join(answers) == "Four. Yes."


def test_empty_block() -> None:
    answers, reasoning, flt = feed(["<think>", "</think>", "Hi", " there."])
    assert "".join(answers) == "Hi there." and reasoning == "" and flt.thought
    answers, reasoning, _ = feed(chars(SKIP_PREFILL + "Hi."))
    assert "".join(answers) == "Hi." and reasoning == "\n\n"


def test_block_that_never_closes_says_nothing_and_is_reported() -> None:
    answers, reasoning, flt = feed(["<think>", "\nstill", " thinking", " </thi"])
    assert answers == [""] * 5
    assert reasoning == "\nstill thinking </thi"
    assert flt.unclosed


def test_answer_only_passes_through_at_once() -> None:
    pieces = ["The", " capital", " of", " France", " is", " Paris", "."]
    answers, reasoning, flt = feed(pieces)
    assert answers[:-1] == pieces and answers[-1] == "" and reasoning == ""
    assert not flt.thought and not flt.unclosed


def test_only_a_possible_tag_prefix_is_held_back() -> None:
    flt = ThinkFilter()
    assert flt.push("x <") == ("x ", "")  # "<" could start <think>
    assert flt.push("t") == ("", "")  # "<t" still could
    assert flt.push("o") == ("<to", "")  # "<to" cannot: released at once
    assert flt.push(" a <b>") == (" a <b>", "")
    assert flt.push(" <") == (" ", "")
    assert flt.finish() == ("<", "")  # held text comes out at the end


def test_force_close_at_the_budget() -> None:
    flt = ThinkFilter(inside=True)
    assert flt.push("step one </") == ("", "step one ")
    assert flt.force_close() == "</"
    assert flt.cut and not flt.inside
    assert flt.push("\n\nDone.") == ("Done.", "")
    assert flt.finish() == ("", "") and not flt.unclosed


def test_reasoning_pieces_are_counted() -> None:
    flt = ThinkFilter(inside=True)
    for _ in range(5):
        flt.push("x")
    assert flt.reasoning_pieces == 5


def test_budget_policy() -> None:
    assert not ThinkBudget(10).spent(9, 1e9)
    assert ThinkBudget(10).spent(10, 0)
    assert ThinkBudget(10, 500).spent(1, 500) and not ThinkBudget(10, 500).spent(1, 499)


def test_plans() -> None:
    budget = ThinkBudget(8)
    assert plan("hidden", thinks=True, template_opens=False, budget=budget).prefill == ""
    assert plan("hidden", thinks=True, template_opens=True, budget=budget).inside
    skip = plan("skip", thinks=True, template_opens=False, budget=budget)
    assert (skip.prefill, skip.inside) == (SKIP_PREFILL, False)
    assert plan("skip", thinks=True, template_opens=True, budget=budget).prefill == CLOSE_THINK
    cut = plan("budget", thinks=True, template_opens=False, budget=budget)
    assert (cut.prefill, cut.inside, cut.budget) == (OPEN_PREFILL, True, budget)
    plain = plan("budget", thinks=False, template_opens=False, budget=budget)
    assert (plain.prefill, plain.inside, plain.budget) == ("", False, None)
    with pytest.raises(ValueError):
        plan("loud", thinks=True, template_opens=False, budget=budget)

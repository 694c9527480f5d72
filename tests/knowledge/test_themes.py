"""Grouping unanswered questions by theme: paraphrases land together, the most typical one first, largest first."""

from __future__ import annotations

from bot.knowledge.themes import group_by_theme, similarities

QUESTIONS = [
    "how do I export my data to csv?",
    "do you sign a HIPAA BAA?",
    "Can I export all my notes as CSV",
    "my invoice shows the wrong VAT number",
    "export data csv please",
    "the VAT number on the invoice is wrong",
    "Will you sign a HIPAA business associate agreement",
    "is there a dark mode",
]


def test_paraphrases_group_together_with_the_most_typical_question_first() -> None:
    themes = group_by_theme(QUESTIONS)
    grouped = [sorted(QUESTIONS[i] for i in theme.members) for theme in themes]
    assert grouped == [
        ["Can I export all my notes as CSV", "export data csv please", "how do I export my data to csv?"],
        ["Will you sign a HIPAA business associate agreement", "do you sign a HIPAA BAA?"],
        ["my invoice shows the wrong VAT number", "the VAT number on the invoice is wrong"],
        ["is there a dark mode"],
    ]
    assert QUESTIONS[themes[0].representative] == "how do I export my data to csv?"
    assert [theme.count for theme in themes] == [3, 2, 2, 1]


def test_similarity_is_a_cosine_and_odd_input_does_not_break_grouping() -> None:
    matrix = similarities(["export csv", "export csv", "dark mode"])
    assert abs(matrix[0, 1] - 1.0) < 1e-9 and matrix[0, 2] == 0.0 and matrix[2, 2] == 1.0
    assert group_by_theme([]) == []
    assert [t.count for t in group_by_theme(["", "🙂", "!!!", "export csv"])] == [1, 1, 1, 1]

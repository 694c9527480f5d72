"""Grouping questions by theme: TF-IDF vectors of the router's text features, cosine similarity, and average-link
agglomerative merging until no two groups are alike enough; each group shows its most central question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.router.features import FloatArray, Vocabulary, terms

# Two groups merge while their questions are, on average, at least this similar (cosine of TF-IDF vectors of
# words, word pairs and character 4-grams): paraphrases of one question score 0.25-0.7, unrelated ones below 0.15.
MERGE_SIMILARITY = 0.25


@dataclass(frozen=True)
class Theme:
    """Questions about one thing: `members` are indexes into the grouped list, the most central first."""

    members: tuple[int, ...]

    @property
    def representative(self) -> int:
        return self.members[0]

    @property
    def count(self) -> int:
        return len(self.members)


def similarities(texts: Sequence[str]) -> FloatArray:
    """Cosine similarity of every pair of texts (1 on the diagonal for any text with a word in it)."""
    n = len(texts)
    _, (rows, cols, values) = Vocabulary.fit(terms(text) for text in texts)
    features = cols > 0  # column 0 is the classifier's bias, not a word
    rows, cols, values = rows[features], cols[features], values[features]
    norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n))
    values = values / np.where(norms > 0, norms, 1.0)[rows]
    similarity = np.zeros((n, n))
    # Only features shared by two texts or more add to a similarity: walk those columns.
    order = np.argsort(cols, kind="stable")
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    ends = np.r_[starts[1:], len(cols)]
    for start, end in zip(starts, ends, strict=True):
        if end - start > 1:
            members, weights = rows[start:end], values[start:end]
            similarity[np.ix_(members, members)] += np.outer(weights, weights)
    np.fill_diagonal(similarity, (norms > 0).astype(np.float64))
    return similarity


def group_by_theme(texts: Sequence[str], *, merge_similarity: float = MERGE_SIMILARITY) -> list[Theme]:
    """The texts in themes, the largest first (ties: the theme whose newest member comes first in `texts`)."""
    n = len(texts)
    if n == 0:
        return []
    pairwise = similarities(texts)
    linkage = pairwise.copy()
    np.fill_diagonal(linkage, -np.inf)
    sizes = np.ones(n)
    groups: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(groups) > 1:
        best = int(np.argmax(linkage))
        i, j = divmod(best, n)
        if linkage[i, j] < merge_similarity:
            break
        # Average linkage: the merged group's similarity to another is the size-weighted mean of the two.
        merged = (linkage[i] * sizes[i] + linkage[j] * sizes[j]) / (sizes[i] + sizes[j])
        linkage[i], linkage[:, i] = merged, merged
        linkage[i, i] = -np.inf
        linkage[j], linkage[:, j] = -np.inf, -np.inf
        sizes[i] += sizes[j]
        groups[i].extend(groups.pop(j))
    themes = []
    for members in groups.values():
        inside = pairwise[np.ix_(members, members)].sum(axis=1)
        central = [members[k] for k in np.lexsort((members, -inside))]
        themes.append(Theme(tuple(central)))
    return sorted(themes, key=lambda theme: (-theme.count, min(theme.members)))

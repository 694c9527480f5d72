"""The abstention threshold calibrated on the docs: the 5th percentile of how close passages' first sentences
come to other pages, whatever the docs' size or style."""

from __future__ import annotations

import numpy as np

from bot.knowledge.embed import StaticEmbedder
from bot.knowledge.search import CALIBRATION_PERCENTILE, FALLBACK_THRESHOLD, calibrated_threshold

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]


def _embedder() -> StaticEmbedder:
    """Each word its own axis, so a text's vector is its words' share, and similarities are easy to foresee."""
    table = np.eye(len(WORDS), dtype=np.float32)
    return StaticEmbedder(table=table, vocab={word: i for i, word in enumerate(WORDS)},
                          weights=np.ones(len(WORDS), dtype=np.float32))


def test_the_threshold_is_how_close_first_sentences_come_to_other_pages() -> None:
    embedder = _embedder()
    # Six pages of two passages: the first sentence of each passage names its page's word, and (for pages
    # 1-5) the next page's word too, which the next page's passages hold.
    texts, documents = [], []
    for page, word in enumerate(WORDS):
        following = WORDS[(page + 1) % len(WORDS)]
        texts += [f"{word} {following}. {word} only after the first sentence.", f"{word}. {word} {word}."]
        documents += [page, page]
    vectors = np.array([embedder.embed(text) for text in texts], dtype=np.float32)
    found = calibrated_threshold(embedder, texts, vectors, np.array(documents, dtype=np.int64))
    expected = []
    for row, text in enumerate(texts):
        sentence = embedder.embed(text.split(". ")[0])
        assert sentence is not None
        expected.append(max(float(vectors[other] @ sentence) for other in range(len(texts))
                            if documents[other] != documents[row]))
    assert found == np.float32(np.percentile(expected, CALIBRATION_PERCENTILE)) or abs(
        found - float(np.percentile(expected, CALIBRATION_PERCENTILE))) < 1e-5
    assert 0.0 < found < 1.0


def test_too_few_pages_to_measure_fall_back_to_a_fixed_threshold() -> None:
    embedder = _embedder()
    texts = ["alpha beta.", "gamma delta."]
    vectors = np.array([embedder.embed(text) for text in texts], dtype=np.float32)
    assert calibrated_threshold(embedder, texts, vectors, np.array([1, 2], dtype=np.int64)) == FALLBACK_THRESHOLD
    empty = np.zeros((0, len(WORDS)), dtype=np.float32)
    assert calibrated_threshold(embedder, [], empty, np.zeros(0, dtype=np.int64)) == FALLBACK_THRESHOLD

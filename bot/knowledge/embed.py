"""Static sentence embeddings: WordPiece tokens looked up in a small shipped table and averaged (numpy only).

The table (bot/knowledge/data/, see its README) was distilled from all-MiniLM-L6-v2 the model2vec way
(bot/knowledge/distill.py): each vocabulary token run alone through the transformer, reduced by PCA. It knows that
"wipe" is near "remove" and "shelve" near "stash", which no word-matching index can; it is loaded on
the first search or indexing, so a bot with no knowledge base never pays its memory.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

TABLE_RESOURCE = "static_embeddings.npz"
VOCAB_RESOURCE = "wordpiece_vocab.txt"
MAX_WORD_CHARS = 100
# Passages are embedded from their first words: the title, heading and opening say what a section is about.
MAX_TOKENS = 256
# Enough characters for MAX_TOKENS tokens: longer texts are cut before tokenizing.
MAX_TEXT_CHARS = 4 * 1024
MAX_CACHED_WORDS = 200_000


class StaticEmbedder:
    """Token vectors (rows of `table`) and the WordPiece vocabulary that indexes them."""

    def __init__(self, table: FloatArray, vocab: Mapping[str, int], weights: FloatArray) -> None:
        self.table = table
        self.vocab = vocab
        # Per-token weight: rarer tokens (later in the frequency-ordered vocabulary) say more.
        self.weights = weights
        self._pieces: dict[str, tuple[int, ...]] = {}

    @property
    def dimensions(self) -> int:
        return int(self.table.shape[1])

    def token_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in _basic_tokens(text):
            ids.extend(self._wordpiece(word))
            if len(ids) >= MAX_TOKENS:
                return ids[:MAX_TOKENS]
        return ids

    def embed(self, text: str) -> FloatArray | None:
        """The unit vector of `text`, or None when none of its tokens is known."""
        ids = self.token_ids(text)
        if not ids:
            return None
        index = np.array(ids, dtype=np.int64)
        weights = self.weights[index]
        vector: FloatArray = np.einsum("i,ij->j", weights, self.table[index])
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else None

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        cached = self._pieces.get(word)
        if cached is None:
            cached = self._pieces[word] = self._split(word) if len(self._pieces) < MAX_CACHED_WORDS else ()
            if not cached and len(self._pieces) >= MAX_CACHED_WORDS:
                return self._split(word)
        return cached

    def _split(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first WordPiece, as BERT splits a word; () when a piece is unknown."""
        if len(word) > MAX_WORD_CHARS:
            return ()
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return ()
            pieces.append(found)
            start = end
        return tuple(pieces)


# Accents (and other combining marks) that BERT's uncased tokenizer strips after NFD.
_COMBINING_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_BASIC_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")


def _basic_tokens(text: str) -> list[str]:
    """BERT's basic tokenizer (uncased): accents stripped, punctuation split off as tokens of its own."""
    text = text[:MAX_TEXT_CHARS].lower()
    if not text.isascii():
        text = _COMBINING_MARKS.sub("", unicodedata.normalize("NFD", text))
    return _BASIC_TOKEN.findall(text)


@functools.cache
def load_embedder() -> StaticEmbedder:
    """The shipped table, read once per process."""
    data = resources.files("bot.knowledge").joinpath("data")
    with data.joinpath(TABLE_RESOURCE).open("rb") as file, np.load(file, allow_pickle=False) as stored:
        table = stored["vectors"].astype(np.float32) * stored["scales"][:, None]
    words = data.joinpath(VOCAB_RESOURCE).read_text(encoding="utf-8").splitlines()
    vocab = {word: index for index, word in enumerate(words)}
    # Zipf's law with the vocabulary in frequency order: weight ~ log of the rank, as model2vec does.
    weights = np.array([math.log(2 + index) for index in range(len(words))], dtype=np.float32)
    return StaticEmbedder(table=table, vocab=vocab, weights=weights)


def to_bytes(vector: FloatArray) -> bytes:
    return vector.astype(np.float16).tobytes()


def from_bytes(blobs: Sequence[bytes | None], dimensions: int) -> FloatArray:
    """Stored vectors as one matrix; a missing or mis-sized vector is a row of zeros (never similar)."""
    matrix = np.zeros((len(blobs), dimensions), dtype=np.float32)
    for row, blob in enumerate(blobs):
        if blob is not None and len(blob) == dimensions * 2:
            matrix[row] = np.frombuffer(blob, dtype=np.float16)
    return matrix

"""Words as the knowledge base indexes and queries them: one normaliser for both engines."""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": " ", "\u00b4": ""})
_WORD = re.compile(r"[^\W_]+")
MAX_TERM_CHARS = 48

# Function words and the filler of a chat question ("hey, how do i … pls"): they match every page, so an
# OR query over them ranks by noise. Generic English only: nothing here may be about one product.
STOPWORDS = frozenset("""
a about above after again against all also am an and any anyone anything are arent as at be because been
before being below between both but by can cant could couldnt did didnt do does doesnt doing dont down
during each either else even ever every few for from further get gets getting got had hadnt has hasnt have
havent having he her here hers herself him himself his how hows i id ie if im in into is isnt it its itself
ive just kind let lets like me mine more most much must my myself need needs no nor not now of off often on
once one only or other others otherwise our ours ourselves out over own per perhaps please pls plz quite
rather really same she should shouldnt so some someone something somehow sort still such than thank thanks
that thats the their theirs them themselves then there theres these they theyre thing things this those
though through thx to too u under until up upon ur us very via want wanna wants was wasnt way we were werent
what whats when where which while who whom whose why will with without wont would wouldnt yes yet you youd
youll your youre yours yourself yourselves hi hello hey guys folks ok okay yeah yep hmm oh
""".split())  # noqa: SIM905  (reads better as text than as 200 quoted words)


def normalize(text: str) -> str:
    # NFKC leaves ASCII as it is: skipping it there makes indexing English docs a fifth faster.
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text.casefold().translate(_APOSTROPHES)


def terms(text: str) -> list[str]:
    """Every word of `text`, normalised, in order (words longer than MAX_TERM_CHARS are dropped)."""
    return [word for word in _WORD.findall(normalize(text)) if len(word) <= MAX_TERM_CHARS]


def index_text(text: str) -> str:
    """The text as the full-text engines store it: its terms separated by single spaces."""
    return " ".join(terms(text))


def query_terms(text: str) -> list[str]:
    """The words of a question worth searching for: no stop words, no repeats, in order."""
    return list(dict.fromkeys(word for word in terms(text) if word not in STOPWORDS))

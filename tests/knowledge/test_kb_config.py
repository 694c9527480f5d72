"""`[knowledge]` and `[routes.X] knowledge` in the config: defaults, and clear errors for bad values."""

from __future__ import annotations

import pytest

from bot.config import parse_config
from bot.errors import ConfigError


def test_defaults_and_a_route_scope() -> None:
    config = parse_config('[knowledge]\ntop_k = 6\non_missing = "escalate"\n'
                          '[routes.general]\npersona = "agent"\nknowledge = ["handbook", "answers"]\n', source=None)
    assert (config.knowledge.top_k, config.knowledge.on_missing) == (6, "escalate")
    assert config.knowledge.min_score == "auto"
    assert parse_config("[knowledge]\nmin_score = 0.7\n", source=None).knowledge.min_score == 0.7
    assert config.routes["general"].knowledge == ["handbook", "answers"]
    assert parse_config("", source=None).routes["billing"].knowledge is None


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("[knowledge]\ntop_k = 0\n", "knowledge.top_k", "greater than or equal to 1"),
    ("[knowledge]\nmin_score = 1.5\n", "knowledge.min_score", 'neither a relevance from 0 to 1 nor "auto"'),
    ('[knowledge]\nmin_score = "high"\n', "knowledge.min_score", 'neither a relevance from 0 to 1 nor "auto"'),
    ('[knowledge]\non_missing = "guess"\n', "knowledge.on_missing", "'escalate' or 'say'"),
    ("[knowledge]\ntopk = 3\n", "knowledge.topk", "unknown key"),
    ('[routes.general]\npersona = "agent"\nknowledge = ["bad name!"]\n', "routes.general.knowledge",
     "not a knowledge source name"),
])
def test_bad_values_name_the_key_and_the_reason(text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source=None)
    assert caught.value.key == key and reason in caught.value.reason

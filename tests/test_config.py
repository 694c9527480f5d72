"""A broken config is refused at start with the file, the key and what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_default_has_the_five_routes_with_general_as_fallback() -> None:
    config = load_config()
    assert config.route_names == ["billing", "technical", "sales", "escalate", "general"]
    assert config.fallback_route == "general"
    assert config.routes["escalate"].escalate and config.routes["billing"].sensitive
    assert all(route.system_prompt and route.examples for route in config.routes.values())


def test_a_partial_file_keeps_the_builtin_routes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[router]\nmode = "rules"\n[voting]\nsamples = 3\n'))
    assert config.router.mode == "rules" and config.voting.samples == 3
    assert "billing" in config.routes
    # Tuning the router does not silently drop the built-in escalation rules.
    assert config.router.rules == load_config().router.rules and config.router.rules
    assert config.source == str(tmp_path / "supportbot.toml")


def test_rules_can_be_turned_off_on_purpose(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[router]\nrules = []\n")).router.rules == []


def test_custom_routes_replace_the_builtin_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
fallback_route = "help"
[routes.help]
persona = "helper"
[routes.refunds]
persona = "refund desk"
sensitive = true
"""))
    assert config.route_names == ["help", "refunds"]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[router\nmode = 1", "", "not valid TOML"),
        ('[router]\nmode = "magic"', "router.mode", "'rules', 'local', 'llm' or 'hybrid'"),
        ("[bot]\nsupport_chanels = []", "bot.support_chanels", "unknown key"),
        ('[[router.rules]]\nroute = "nowhere"\npattern = "x"', "router.rules.0.route",
         "'nowhere', which is not defined"),
        ('[[router.rules]]\nroute = "billing"\npattern = "(unclosed"', "router.rules.0.pattern",
         "invalid regular expression"),
        ('fallback_route = "missing"', "fallback_route", "'missing' is not a defined route"),
        ("[voting]\nsamples = 0", "voting.samples", "greater than or equal to 1"),
        ("[voting]\nmin_agreement = 1.5", "voting.min_agreement", "less than or equal to 1"),
        ('[escalation]\noncall = ["bob"]', "escalation.oncall", "not a Slack user id"),
        ('[routes.Billing]\npersona = "x"\n[routes.general]\npersona = "y"', "routes.Billing", "lowercase"),
        ('[routes.general]\nmodel = "x"', "routes.general.persona", "required key is missing"),
        ('[escalation.rotation]\ntimezone = "Mars/Base"', "escalation.rotation.timezone", "unknown time zone"),
    ],
)
def test_bad_config_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.file == str(path)
    assert error.key == key
    assert reason in error.reason
    assert str(path) in str(error)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")

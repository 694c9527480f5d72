"""`supportbot eval`: scores on a small labelled file, the JSON contract, clear errors, corrections export."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_config
from tests.test_logs_cli import _fill_and_correct
from tests.web.conftest import CONVERSATIONS

DATA = Path(__file__).parent / "data" / "route_eval_small.jsonl"
CONTRACT = {"n", "accuracy", "macro_f1", "per_route", "confusion", "llm_calls", "seconds"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL"))}
    return base | {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'eval.db'}"}


def supportbot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def evaluate(env: dict[str, str], router: str, path: Path = DATA) -> dict[str, Any]:
    result = supportbot(env, "eval", str(path), "--router", router, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one JSON object on one line
    return dict(json.loads(result.stdout))


def test_rules_router_scores_match_a_hand_count(env: dict[str, str]) -> None:
    """Rules catch the lawyer and the manager; everything else falls back to `general`."""
    report = evaluate(env, "rules")
    assert set(report) >= CONTRACT
    assert report["n"] == 6 and report["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    escalate, general, billing = (report["per_route"][r] for r in ("escalate", "general", "billing"))
    assert escalate == {"precision": 1.0, "recall": pytest.approx(2 / 3, abs=1e-4), "f1": 0.8, "support": 3}
    assert general == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3, abs=1e-4), "support": 2}
    assert billing == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3, abs=1e-4)
    assert report["confusion"]["escalate"] == {"escalate": 2, "general": 1, "billing": 0}
    assert report["confusion"]["billing"]["general"] == 1
    assert report["llm_calls"] == 0 and report["llm_share"] == 0 and report["seconds"] >= 0


@pytest.mark.parametrize("router", ["local", "llm", "hybrid"])
def test_every_router_reports_the_same_shape_and_counts_llm_calls(env: dict[str, str], router: str) -> None:
    report = evaluate(env, router)
    assert set(report) >= CONTRACT and report["router"] == router and report["n"] == 6
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 6
    assert sum(score["support"] for score in report["per_route"].values()) == 6
    assert all(set(score) == {"precision", "recall", "f1", "support"} for score in report["per_route"].values())
    correct = sum(report["confusion"].get(route, {}).get(route, 0) for route in report["confusion"])
    assert report["accuracy"] == pytest.approx(correct / 6)
    assert report["macro_f1"] == pytest.approx(
        sum(score["f1"] for score in report["per_route"].values()) / len(report["per_route"]), abs=1e-4)
    assert report["llm_provider"] == "offline"
    if router == "local":
        assert report["llm_calls"] == 0
    if router == "llm":
        # Every message reaches the (offline) LLM; the output says who stood in for Claude.
        assert report["llm_calls"] == 6 and report["llm_share"] == 1.0 and "stood in for Claude" in report["note"]
    if router == "hybrid":
        assert report["llm_calls"] == round(report["llm_share"] * 6)
        assert sum(report["decided_by"].values()) == 6


def test_table_shows_scores_per_route_and_the_confusion_matrix(env: dict[str, str]) -> None:
    result = supportbot(env, "eval", str(DATA), "--router", "llm")
    assert result.returncode == 0, result.stderr
    for text in ("accuracy", "macro-F1", "LLM calls", "reached the LLM", "per route", "precision", "confusion",
                 "stood in for Claude"):
        assert text in result.stdout, text


def test_bad_lines_and_unknown_labels_are_refused_with_line_numbers(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "hi", "route": "general"}\n\n{"text": "oops", "route": \n')
    result = supportbot(env, "eval", str(broken))
    assert result.returncode == 2 and f"{broken}:3: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr

    missing_text = tmp_path / "missing.jsonl"
    missing_text.write_text('{"route": "general"}\n')
    result = supportbot(env, "eval", str(missing_text))
    assert result.returncode == 2 and f'{missing_text}:1: "text" must be a non-empty string' in result.stderr

    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text("".join(json.dumps({"text": f"m{i}", "route": r}) + "\n"
                               for i, r in enumerate(["billing", "refunds", "general", "refunds", "vip"])))
    result = supportbot(env, "eval", str(unknown))
    assert result.returncode == 2
    assert "'refunds' on lines 2, 4" in result.stderr and "'vip' on line 5" in result.stderr
    assert "Configured routes: billing" in result.stderr

    assert supportbot(env, "eval", str(tmp_path / "nope.jsonl")).returncode == 2
    assert "--export-corrections" in supportbot(env, "eval").stderr


def test_export_corrections_writes_text_route_lines(env: dict[str, str], tmp_path: Path) -> None:
    asyncio.run(_fill_and_correct(env["DATABASE_URL"], CONVERSATIONS))
    out = tmp_path / "exported" / "corrections.jsonl"
    result = supportbot(env, "eval", "--export-corrections", str(out))
    assert result.returncode == 0, result.stderr
    assert "exported 1 route correction" in result.stderr
    [line] = out.read_text().splitlines()
    assert json.loads(line) == {"text": CONVERSATIONS[1][2], "route": "billing"}
    # The export is itself a labelled file the router can be scored on.
    report = evaluate(env, "rules", out)
    assert report["n"] == 1 and report["per_route"]["billing"]["support"] == 1


DEFERRAL = {"threshold", "deferred_share", "confident_errors", "confident_error_rate",
            "escalations_missed_confidently", "false_escalations"}
# A hand-counted file: what the rules and the local models keep, and get wrong, without any LLM.
DEFERRAL_ROWS = [
    ("I'm going to sue you", "escalate"),                               # rule, right
    ("I'm going to sue you if this invoice is not fixed", "general"),   # rule, a false escalation
    ("I was charged twice this month", "technical"),                    # confidently billing: wrong
    ("where is my invoice for October?", "escalate"),                   # confidently billing: a missed escalation
    ("how much is the enterprise plan?", "sales"),                      # confidently right
    ("zqxv blorp frindle", "billing"),                                  # nothing known: sent to the LLM
]


def _deferral_file(tmp_path: Path) -> Path:
    path = tmp_path / "deferral.jsonl"
    path.write_text("".join(json.dumps({"text": t, "route": r}) + "\n" for t, r in DEFERRAL_ROWS))
    return path


@pytest.mark.parametrize("router", ["rules", "local", "llm", "hybrid"])
def test_deferral_says_what_the_local_tiers_keep_and_get_wrong_without_any_llm(
    env: dict[str, str], tmp_path: Path, router: str
) -> None:
    report = evaluate(env, router, _deferral_file(tmp_path))

    deferral = report["deferral"]
    assert set(deferral) == DEFERRAL
    assert deferral["threshold"] == load_config().router.confidence_threshold
    assert deferral["deferred_share"] == pytest.approx(1 / 6, abs=1e-4)
    assert deferral["confident_errors"] == 3
    assert deferral["confident_error_rate"] == pytest.approx(3 / 6, abs=1e-4)
    assert deferral["escalations_missed_confidently"] == 1
    assert deferral["false_escalations"] == 1
    assert "sweep" not in report


def test_deferral_follows_the_configured_threshold(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "supportbot.toml"
    config.write_text("[router]\nconfidence_threshold = 1.0\n")
    report = evaluate(env | {"SUPPORTBOT_CONFIG": str(config)}, "local", _deferral_file(tmp_path))

    # Only the two rule decisions are kept; one of them is the false escalation.
    assert report["deferral"]["threshold"] == 1.0
    assert report["deferral"]["deferred_share"] == pytest.approx(4 / 6, abs=1e-4)
    assert report["deferral"]["confident_errors"] == 1 and report["deferral"]["false_escalations"] == 1


def test_sweep_shows_the_deferral_at_several_thresholds(env: dict[str, str], tmp_path: Path) -> None:
    data = _deferral_file(tmp_path)
    result = supportbot(env, "eval", str(data), "--router", "local", "--format", "json", "--sweep")
    assert result.returncode == 0, result.stderr
    sweep = json.loads(result.stdout)["sweep"]
    configured = load_config().router.confidence_threshold
    assert [row["threshold"] for row in sweep] == sorted({0.5, 0.6, 0.7, 0.8, 0.9, 0.95, configured})
    assert all(set(row) == DEFERRAL for row in sweep)
    shares = [row["deferred_share"] for row in sweep]
    assert shares == sorted(shares)  # a higher threshold never sends fewer messages to the LLM

    table = supportbot(env, "eval", str(data), "--router", "local", "--sweep")
    assert table.returncode == 0, table.stderr
    for text in ("deferral", "sent to the LLM", "confidently wrong", "escalations missed", "false escalations",
                 "0.95", f"{configured:.2f} *", "the configured [router] confidence_threshold"):
        assert text in table.stdout, text

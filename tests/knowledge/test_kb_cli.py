"""`supportbot kb …` through real subprocesses, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.knowledge.conftest import DOCS, write_docs

SUPPORTBOT = [sys.executable, "-m", "bot.cli", "kb"]


def kb(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPPORTBOT, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def operator_env(database_url: str) -> dict[str, str]:
    """The environment of an operator's shell: their database, none of the test runner's tokens."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL"))}
    base["DATABASE_URL"] = database_url
    base["COLUMNS"] = "200"
    return base


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = operator_env(f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}")
    # Four short pages are too few to calibrate min_score on (see CALIBRATION_MIN_PAGES): the test names its own.
    config = tmp_path / "supportbot.toml"
    config.write_text("[knowledge]\nmin_score = 0.5\n")
    base["SUPPORTBOT_CONFIG"] = str(config)
    return base


def test_add_list_search_sync_remove(env: dict[str, str], tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    (docs / "junk.md").write_bytes(b"\x00\x01\x02" * 100)
    added = kb(["add", str(docs), "--name", "handbook", "--format", "json"], env)
    assert added.returncode == 0, added.stderr
    report = json.loads(added.stdout)
    assert report["added"] == len(DOCS) and report["errors"][0]["location"] == str(docs / "junk.md")

    listed = kb(["list", "--format", "json"], env)
    [source] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (source["name"], source["documents"], source["routes"]) == ("handbook", len(DOCS), [])
    assert "binary" in source["errors"][0]["error"]
    table = kb(["list"], env)
    assert "handbook" in table.stdout and str(docs) in table.stdout and "junk.md" in table.stdout

    found = kb(["search", "how do I get a refund in settings?", "--format", "json", "--limit", "2"], env)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["abstained"] is False and len(answer["passages"]) == 2
    best = answer["passages"][0]
    assert best["source"].endswith("refunds.md") and best["title"] == "Refunds and invoices" and best["score"] > 0
    shown = kb(["search", "how do I get a refund?"], env)
    assert "Refunds and invoices" in shown.stdout and "refunds.md" in shown.stdout

    (docs / "guides" / "export.txt").unlink()
    synced = kb(["sync", "handbook"], env)
    assert synced.returncode == 0 and "1 removed" in synced.stdout
    removed = kb(["remove", "handbook"], env)
    assert removed.returncode == 0 and "removed source handbook" in removed.stdout
    assert "no knowledge sources yet" in kb(["list"], env).stdout


def test_a_question_the_docs_do_not_cover_says_so(env: dict[str, str], tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    assert kb(["add", str(docs)], env).returncode == 0
    result = kb(["search", "what is the airspeed velocity of an unladen swallow?", "--format", "json"], env)
    assert json.loads(result.stdout)["abstained"] is True and json.loads(result.stdout)["passages"] == []
    shown = kb(["search", "what is the airspeed velocity of an unladen swallow?"], env)
    assert "do not cover this" in shown.stdout


def test_eval_prints_one_json_line_with_the_contract_fields(env: dict[str, str], tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    assert kb(["add", str(docs), "--name", "handbook"], env).returncode == 0
    labelled = tmp_path / "questions.jsonl"
    rows = [{"q": "how do I ask for a refund", "gold": ["refunds.md"], "kind": "answerable"},
            {"q": "recovery codes after losing my phone", "gold": ["security/two-factor.md"], "kind": "answerable"},
            {"q": "what is the capital of Mongolia?", "gold": [], "kind": "unanswerable"}]
    labelled.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = kb(["eval", str(labelled), "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    report = json.loads(line)
    assert {"n", "answerable", "recall_at_1", "recall_at_5", "mrr", "unanswerable", "abstain_rate", "p50_ms",
            "p99_ms", "seconds"} <= set(report)
    assert (report["n"], report["answerable"], report["unanswerable"]) == (3, 2, 1)
    assert report["recall_at_1"] == 1.0 and report["mrr"] == 1.0 and report["abstain_rate"] == 1.0
    table = kb(["eval", str(labelled)], env)
    assert "recall_at_5" in table.stdout


def test_mistakes_get_a_clear_error_not_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    missing = kb(["add", str(tmp_path / "nowhere")], env)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr and "Traceback" not in missing.stderr
    assert "no knowledge source named 'ghost'" in kb(["remove", "ghost"], env).stderr
    assert "unknown route 'refunds'" in kb(["search", "hi", "--route", "refunds"], env).stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "hello", "gold": "not a list"}\n')
    assert "bad.jsonl:1: gold must be a list" in kb(["eval", str(bad)], env).stderr
    empty = tmp_path / "q.jsonl"
    empty.write_text('{"q": "hello", "gold": ["a.md"]}\n')
    assert "knowledge base is empty" in kb(["eval", str(empty)], env).stderr


def test_the_bot_does_not_load_the_knowledge_base_until_it_is_used() -> None:
    """serve's idle memory stays as it was: the embedding table and lxml load on the first kb use only."""
    probe = ("import sys, bot.cli, bot.web.server, bot.runtime; "
             "print([m for m in sys.modules if m.startswith(('bot.knowledge', 'lxml', 'storage.knowledge'))])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

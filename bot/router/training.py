"""What the local tiers learn from: the routes' examples, the shipped data, and a team's own labelled files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Config

# The project's own data first (see bot/router/data/README.md), then the public-dataset rows.
SHIPPED_DATA_RESOURCES = ("realistic.jsonl", "training.jsonl")
# Route examples in the config are the operator's own words. A team's labelled files weigh as much as
# the shipped rows: weighed more (2.0), the learning curve (benchmarks/router_learning_curve.py) showed a
# new domain's labels making the local tiers sure of themselves faster than right.
CONFIG_EXAMPLE_WEIGHT = 2.0
TEAM_FILE_WEIGHT = 1.0
# The public-dataset rows are few and short: they speak for the terse one-line questions of a consumer app.
PUBLIC_DATASETS = frozenset({"banking77", "clinc150"})
PUBLIC_DATASET_WEIGHT = 1.5


@dataclass(frozen=True)
class LabeledText:
    text: str
    route: str


class TrainingFileError(ValueError):
    """A labelled training file that cannot be used; names the file, the line and what is wrong."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


def shipped_training_data() -> list[LabeledText]:
    """The attributed training sets shipped in `bot/router/data/` (see the README there)."""
    return [row for row, _ in _shipped_rows()]


def _shipped_rows() -> list[tuple[LabeledText, float]]:
    rows: list[tuple[LabeledText, float]] = []
    folder = resources.files("bot.router").joinpath("data")
    for name in SHIPPED_DATA_RESOURCES:
        for line in folder.joinpath(name).read_text("utf-8").splitlines():
            if line.strip():
                data = json.loads(line)
                weight = PUBLIC_DATASET_WEIGHT if data.get("source") in PUBLIC_DATASETS else 1.0
                rows.append((LabeledText(text=str(data["text"]), route=str(data["route"])), weight))
    return rows


def read_training_file(path: Path, routes: Sequence[str]) -> tuple[list[LabeledText], int]:
    """The reviewed rows of a `{"text", "route"}` JSONL file, and how many still await review.

    A row flagged `"review": true` (as `supportbot triage --export-labels` flags the labels Claude
    was unsure of) is left out until a person has checked it and cleared the flag.
    """
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainingFileError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingFileError(path, None, f"cannot read the file ({exc})") from None
    rows: list[LabeledText] = []
    awaiting_review = 0
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingFileError(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise TrainingFileError(path, number, 'expected an object like {"text": "...", "route": "billing"}')
        text, route, review = data.get("text"), data.get("route"), data.get("review", False)
        if not isinstance(text, str) or not text.strip():
            raise TrainingFileError(path, number, '"text" must be a non-empty string')
        if not isinstance(route, str) or route.strip() not in routes:
            raise TrainingFileError(path, number, f'"route" {route!r} is not a configured route '
                                    f"(configured: {', '.join(routes)})")
        if not isinstance(review, bool):
            raise TrainingFileError(path, number, '"review" must be true or false')
        if review:
            awaiting_review += 1
            continue
        rows.append(LabeledText(text=text, route=route.strip()))
    return rows, awaiting_review


def config_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """The routes' `examples` from the config, weighted as the operator's own words."""
    return [
        (LabeledText(text=example, route=name), CONFIG_EXAMPLE_WEIGHT)
        for name, route in config.routes.items()
        for example in route.examples
    ]


def team_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """The reviewed rows of `[router] training_files` (already checked when the config was loaded)."""
    rows: list[tuple[LabeledText, float]] = []
    for path in config.training_paths:
        reviewed, _ = read_training_file(path, config.route_names)
        rows.extend((row, TEAM_FILE_WEIGHT) for row in reviewed)
    return rows


def training_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """What the local tiers train on, weighted: route examples, the team's files, then the shipped rows."""
    examples = config_examples(config) + team_examples(config)
    if config.router.use_shipped_training_data:
        examples.extend((row, weight) for row, weight in _shipped_rows() if row.route in config.routes)
    return examples

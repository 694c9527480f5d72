"""The TOML config — routes, personas, rules, escalation and voting — loaded into validated objects."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.vocabulary import RouterMode

BUILT_IN_SOURCE = "<built-in default config>"
ROUTE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BotSection(_Section):
    name: str = "supportbot"
    # Every top-level message in these channels is handled; DMs and @mentions anywhere.
    support_channels: list[str] = []
    # Staff besides on-call: their replies in a thread take it over, they may press page buttons.
    staff: list[str] = []
    # "thanks!", "ok" and friends get no reply.
    ignore_pleasantries: bool = True
    # Thread history sent to the model is trimmed to this many characters, newest kept.
    history_budget_chars: Annotated[int, Field(ge=200, le=200_000)] = 8_000
    # Messages processed at once after the ack.
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    # Keywords that make any reply go through voting.
    sensitive_keywords: list[str] = []


class SlackSection(_Section):
    # Answers from the model appear in the thread as they are written (voted answers never stream).
    streaming: bool = True
    # A stream is appended to at most this often: Slack rate-limits the stream methods.
    stream_interval_s: Annotated[float, Field(ge=0.2, le=10.0)] = 1.0


class RuleConfig(_Section):
    route: str
    pattern: str
    name: str | None = None
    # Higher wins when several rules match.
    priority: int = 100
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return pattern


class RouterSection(_Section):
    mode: RouterMode = "hybrid"
    # Below it, hybrid mode asks the LLM.
    confidence_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.78
    # Hybrid mode also asks the LLM when the local severity detector gives a message it did not
    # escalate at least this probability of needing a person now: a missed escalation costs most.
    severity_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.08
    rules: list[RuleConfig] = []
    # Model used by the LLM router.
    model: str = "claude-haiku-4-5"
    # Train the local classifier on the shipped, attributed training set besides route examples.
    use_shipped_training_data: bool = True
    # A team's own labelled messages ({"text", "route"} JSONL, e.g. from `triage --export-labels`);
    # relative paths are read from the config file's folder.
    training_files: list[str] = []


class RouteConfig(_Section):
    persona: str
    description: str = ""
    system_prompt: str = ""
    model: str = "claude-haiku-4-5"
    max_tokens: Annotated[int, Field(ge=16, le=8192)] = 1024
    sensitive: bool = False
    escalate: bool = False
    examples: list[str] = []
    # Knowledge sources this route answers from (`supportbot kb list`); None = every source.
    knowledge: list[str] | None = None

    @field_validator("knowledge")
    @classmethod
    def _source_names(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            if not SOURCE_NAME.match(name):
                raise ValueError(f"{name!r} is not a knowledge source name (letters, digits, '.', '_' or '-')")
        return names


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


def _minute_of_day(value: object) -> object:
    """"HH:MM" (00:00 to 24:00) as minutes since midnight, parsed once here."""
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"(\d{2}):(\d{2})", value)
    if not match or int(match[1]) > 24 or int(match[2]) > 59 or (match[1] == "24" and match[2] != "00"):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00 to 24:00)")
    return int(match[1]) * 60 + int(match[2])


def _weekday_numbers(value: object) -> object:
    """Day names ("mon" … "sun") as weekday numbers (Monday = 0)."""
    if not isinstance(value, list | tuple | set | frozenset):
        return value
    numbers = []
    for day in value:
        if isinstance(day, str) and day.strip().lower() in WEEKDAYS:
            numbers.append(WEEKDAYS.index(day.strip().lower()))
        elif isinstance(day, int) and not isinstance(day, bool) and 0 <= day < 7:
            numbers.append(day)
        else:
            raise ValueError(f"{day!r} is not a weekday (use {', '.join(WEEKDAYS)})")
    return frozenset(numbers)


class WeeklyTime(NamedTuple):
    """A weekday (Monday = 0) and a minute of that day, wall-clock in the rotation's time zone."""

    weekday: int
    minute: int


def _weekly_time(value: object) -> object:
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"(mon|tue|wed|thu|fri|sat|sun) (\d{2}):(\d{2})", value.strip().lower())
    if not match or int(match[2]) > 23 or int(match[3]) > 59:
        raise ValueError(f"{value!r} is not a weekday and time like \"mon 09:00\"")
    return WeeklyTime(WEEKDAYS.index(match[1]), int(match[2]) * 60 + int(match[3]))


MinuteOfDay = Annotated[int, BeforeValidator(_minute_of_day), Field(ge=0, le=MINUTES_PER_DAY)]
Weekdays = Annotated[frozenset[int], BeforeValidator(_weekday_numbers)]


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Paris)") from exc
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


class RotationShift(_Section):
    user: str
    # Days and hours in the rotation's time zone, e.g. days = ["mon", "tue"], start = "09:00";
    # a shift whose end is before its start runs past midnight (start = "22:00", end = "06:00").
    days: Weekdays = frozenset(range(7))
    start: MinuteOfDay = 0
    end: MinuteOfDay = MINUTES_PER_DAY

    @field_validator("user")
    @classmethod
    def _shift_user_id(cls, user: str) -> str:
        if not SLACK_USER_ID.match(user):
            raise ValueError(f"{user!r} is not a Slack user id (like U0123ABCD)")
        return user


class RotationConfig(_Section):
    timezone: TimeZoneName = "UTC"
    # Weekly rotation: users take turns a week each, handing over at `handoff` ("mon 09:00") in
    # `timezone`; users[0] holds the week that contains `start`. Shifts, when one covers the
    # moment, win over the weekly turn (e.g. weekend or night cover).
    users: list[str] = []
    handoff: Annotated[WeeklyTime, BeforeValidator(_weekly_time)] = WeeklyTime(0, 9 * 60)
    start: date = date(2026, 1, 5)
    shifts: list[RotationShift] = []

    @field_validator("users")
    @classmethod
    def _rotation_user_ids(cls, users: list[str]) -> list[str]:
        for user in users:
            if not SLACK_USER_ID.match(user):
                raise ValueError(f"{user!r} is not a Slack user id (like U0123ABCD)")
        return users

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class EscalationSection(_Section):
    oncall: list[str] = []
    usergroup: str | None = None
    rotation: RotationConfig | None = None
    # Where pages go; DM to on-call when unset.
    channel: str | None = None
    # After repage_max unanswered re-pages the page goes here, mentioning the whole group.
    fallback_channel: str | None = None
    ack_timeout_s: Annotated[int, Field(ge=5, le=7 * 24 * 3600)] = 600
    repage_max: Annotated[int, Field(ge=0, le=20)] = 2
    # Unresolved escalations expire after this many hours.
    expire_after_h: Annotated[int, Field(ge=1, le=24 * 90)] = 72

    @field_validator("oncall")
    @classmethod
    def _user_ids(cls, users: list[str]) -> list[str]:
        for user in users:
            if not SLACK_USER_ID.match(user):
                raise ValueError(f"{user!r} is not a Slack user id (like U0123ABCD)")
        return users

    @field_validator("usergroup")
    @classmethod
    def _usergroup_id(cls, value: str | None) -> str | None:
        """Takes the id (S0123ONCALL) or the mention Slack shows (<!subteam^S0123ONCALL>)."""
        if value is None:
            return None
        match = re.fullmatch(r"(?:<!subteam\^)?(S[A-Z0-9]{2,})(?:\|[^>]*)?>?", value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a Slack user group id (like S0123ONCALL)")
        return match[1]


class VotingSection(_Section):
    samples: Annotated[int, Field(ge=1, le=15)] = 5
    min_agreement: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    strategy: Literal["majority", "judge"] = "majority"
    # Replies are also voted on when the router was less sure than this.
    low_confidence_below: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class LLMSection(_Section):
    # One HTTP attempt; retries (429/529/5xx/timeouts/garbled bodies) up to max_retries per model.
    timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = 30.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    # The whole call, retries and fallback included: nobody waits longer than this for one answer.
    deadline_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 60.0
    # The longest server-requested wait (retry-after) honoured; a longer one means "use the fallback".
    max_retry_wait_s: Annotated[float, Field(ge=0.0, le=600.0)] = 10.0
    # Tried once when the route's model keeps failing; "" (or unset) means escalate instead.
    fallback_model: str | None = "claude-sonnet-4-6"
    # After this many calls in a row to one model end unavailable, calls to it fail at once for
    # circuit_cooldown_s (then one probe call); 0 turns the circuit breaker off.
    circuit_failures: Annotated[int, Field(ge=0, le=1000)] = 5
    circuit_cooldown_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    # US dollars per million tokens, for cost estimates on the dashboard.
    prices: dict[str, dict[str, float]] = {
        "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_read": 0.1},
        "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_read": 0.3},
        "claude-opus-4-7": {"input": 5.0, "output": 25.0, "cache_read": 0.5},
    }


def _min_score(value: object) -> object:
    if value == "auto" or (isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
        return value
    raise ValueError(f'{value!r} is neither a relevance from 0 to 1 nor "auto"')


class KnowledgeSection(_Section):
    # Passages handed to the model (and shown by `kb search` by default).
    top_k: Annotated[int, Field(ge=1, le=20)] = 4
    # Below this relevance (0..1, see the README) the docs are taken not to cover the question; "auto": the
    # threshold calibrated on the indexed docs themselves (bot/knowledge/search.py, calibrated_threshold).
    min_score: Annotated[float | Literal["auto"], BeforeValidator(_min_score)] = "auto"
    # When a route has sources but nothing relevant is found: page a person, or answer with a clear note.
    on_missing: Literal["escalate", "say"] = "say"


class ResolutionSection(_Section):
    # A thread where nobody wrote or rated anything for this long is settled (resolved_by_bot when the bot's
    # answer was the last word and not rated 👎; see bot.vocabulary.Resolution).
    assume_resolved_after_h: Annotated[float, Field(gt=0, le=24 * 90)] = 24


class SlaTargets(_Section):
    """Response-time targets; a missing one is measured but has no target (no warning, no breach)."""

    # The customer's first message to the bot's first answer or notice (always 24/7: the bot never sleeps).
    first_response_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    # A page sent to the first message in the thread by a person (staff or on-call); business hours.
    first_human_response_min: Annotated[float, Field(gt=0, le=90 * 24 * 60)] | None = None
    # The customer's first message to the escalation resolved; business hours.
    resolution_h: Annotated[float, Field(gt=0, le=365 * 24)] | None = None


class BusinessHoursConfig(_Section):
    """When the human-response and resolution clocks run, wall-clock in [sla] timezone; an end before the
    start runs past midnight ("22:00" to "06:00"), as rotation shifts do."""

    days: Weekdays = frozenset(range(5))
    start: MinuteOfDay = 9 * 60
    end: MinuteOfDay = 17 * 60

    @model_validator(mode="after")
    def _some_time_open(self) -> BusinessHoursConfig:
        if not self.days:
            raise _KeyedError("sla.business_hours.days", "business hours need at least one day")
        if self.start == self.end:
            raise _KeyedError("sla.business_hours.end",
                              "the end must differ from the start (use 00:00 to 24:00 for whole days)")
        return self


class SlaSection(SlaTargets):
    """[sla]: default targets, per-route ([sla.routes.<route>]) and per-channel ([sla.channels.<id>]) ones
    (a channel's wins over a route's, each key on its own), business hours and when to warn."""

    timezone: TimeZoneName = "UTC"
    # Unset: the clocks run 24/7.
    business_hours: BusinessHoursConfig | None = None
    # A warning goes to the escalation channel once this share of a target has passed.
    warn_at: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    routes: dict[str, SlaTargets] = {}
    channels: dict[str, SlaTargets] = {}

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Config(_Section):
    """The whole validated config; `source` names the file it came from."""

    bot: BotSection = BotSection()
    slack: SlackSection = SlackSection()
    router: RouterSection = RouterSection()
    fallback_route: str = "general"
    routes: dict[str, RouteConfig]
    escalation: EscalationSection = EscalationSection()
    voting: VotingSection = VotingSection()
    llm: LLMSection = LLMSection()
    knowledge: KnowledgeSection = KnowledgeSection()
    resolution: ResolutionSection = ResolutionSection()
    sla: SlaSection = SlaSection()
    source: str = BUILT_IN_SOURCE

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        if not self.routes:
            raise _KeyedError("routes", "at least one route must be defined under [routes.<name>]")
        for name in self.routes:
            if not ROUTE_NAME.match(name):
                raise _KeyedError(f"routes.{name}", "a route name must be lowercase letters, digits, - or _")
        if self.fallback_route not in self.routes:
            raise _KeyedError(
                "fallback_route",
                f"{self.fallback_route!r} is not a defined route "
                f"(defined: {', '.join(sorted(self.routes))})"
            )
        for index, rule in enumerate(self.router.rules):
            if rule.route not in self.routes:
                raise _KeyedError(
                    f"router.rules.{index}.route",
                    f"rule points at route {rule.route!r}, which is not defined "
                    f"(defined: {', '.join(sorted(self.routes))})",
                )
        for name in self.sla.routes:
            if name not in self.routes:
                raise _KeyedError(f"sla.routes.{name}", f"{name!r} is not a defined route "
                                  f"(defined: {', '.join(sorted(self.routes))})")
        return self

    @property
    def route_names(self) -> list[str]:
        return list(self.routes)

    @property
    def escalation_route(self) -> str | None:
        """The route that pages a person (the first with `escalate = true`), if the config has one."""
        return next((name for name, route in self.routes.items() if route.escalate), None)

    @property
    def training_paths(self) -> list[Path]:
        """`[router] training_files`, relative ones resolved against the config file's folder."""
        base = Path(self.source).parent if self.source != BUILT_IN_SOURCE else Path.cwd()
        return [base / Path(name).expanduser() for name in self.router.training_files]

    def route(self, name: str) -> RouteConfig:
        return self.routes[name]

    def price(self, model: str) -> dict[str, float] | None:
        return self.llm.prices.get(model)


class _KeyedError(ValueError):
    """A cross-field validation error that knows the exact key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(reason)


DEFAULT_CONFIG_RESOURCE = "default_config.toml"


def default_config_text() -> str:
    return resources.files("bot").joinpath(DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")


def load_config(path: Path | str | None = None) -> Config:
    """Load and validate the config at `path`, or the built-in default; raise ConfigError naming the key."""
    if path is None:
        return parse_config(default_config_text(), source=None)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found (check SUPPORTBOT_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read the file: {exc.strerror}") from None
    return parse_config(text, source=file)


def parse_config(text: str, *, source: Path | None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    if "routes" not in data:
        # A file that only tunes the router or escalation keeps the built-in routes and their rules
        # (`rules = []` under [router] turns the rules off on purpose).
        defaults = tomllib.loads(default_config_text())
        data["routes"] = defaults["routes"]
        router = data.setdefault("router", {})
        if isinstance(router, dict) and "rules" not in router:
            router["rules"] = defaults["router"]["rules"]
    data["source"] = str(source) if source is not None else BUILT_IN_SOURCE
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(source, exc) from None
    _check_training_files(config, source)
    return config


def _check_training_files(config: Config, source: Path | None) -> None:
    """Refuse at start a training file the local tiers could not learn from, naming its line."""
    from bot.router.training import TrainingFileError, read_training_file

    for index, path in enumerate(config.training_paths):
        try:
            read_training_file(path, config.route_names)
        except TrainingFileError as exc:
            raise ConfigError(source, f"router.training_files.{index}", str(exc)) from None


def _config_error(source: Path | None, exc: ValidationError) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    key = ".".join(str(part) for part in first["loc"])
    context = first.get("ctx") or {}
    inner = context.get("error")
    if isinstance(inner, _KeyedError):
        return ConfigError(source, inner.key, inner.reason)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; check the spelling against the README's configuration reference"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(source, key, message)


def describe(config: Config) -> dict[str, Any]:
    """A JSON-friendly summary of the routes, for the dashboard and `supportbot chat`."""
    return {
        name: {"persona": route.persona, "model": route.model, "sensitive": route.sensitive,
               "escalate": route.escalate}
        for name, route in config.routes.items()
    }

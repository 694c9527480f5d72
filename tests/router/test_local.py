"""The local router: routes clear messages right, stays inside the configured routes, and knows when it is unsure."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot.config import Config, load_config, parse_config
from bot.router.base import RouteDecision
from bot.router.features import HEAD_CHARS, IMPACT_TERM, TAIL_CHARS, normalize, terms
from bot.router.hybrid import RulesThenLocal, deferral
from bot.router.local import LocalClassifier, LocalRouter, Prediction
from bot.router.rules import RulesRouter
from bot.router.training import LabeledText, shipped_training_data

DEFAULT_ROUTES = {"billing", "technical", "sales", "escalate", "general"}

# Written for these tests, not taken from the training data: what users of each route send.
CLEAR_MESSAGES = [
    ("Hey, you billed my card twice for the March renewal", "billing"),
    ("can I get a PDF copy of invoice 2231?", "billing"),
    ("how long until the refund for my returned headphones shows up", "billing"),
    ("the mobile app freezes on the splash screen since this morning", "technical"),
    ("I keep getting 'invalid password' even after resetting it", "technical"),
    ("my debit card gets rejected at every shop", "technical"),
    ("what does the Business plan cost for 12 users?", "sales"),
    ("can my 16 year old son get his own card?", "sales"),
    ("do you ship cards to Portugal?", "sales"),
    ("I've had enough, I'm taking my business elsewhere and telling everyone why", "escalate"),
    ("where is my parcel? it was due Tuesday", "general"),
    ("good morning!", "general"),
    ("thanks, that fixed it", "general"),
    ("how do I change the email on my profile", "general"),
]

# Words that sound like an escalation in messages that are not one; rules leave them to the classifier.
LOOK_ALIKES = [
    ("our lawyer needs a copy of the invoice", "billing"),
    ("how do I add my manager as an admin", "general"),
    ("is the human resources module included in Business?", "sales"),
    ("are you a real person?", "general"),
]

WEIRD_INPUTS = [
    "",
    "   \n\t ",
    "👍🔥🙏",
    ":thumbsup: :tada:",
    "<@U0123ABC> <https://example.com/invoices|see this link>",
    "我的账单有问题，请帮忙",
    "مرحبا، لا أستطيع تسجيل الدخول",
    "Здравствуйте, где мой заказ?",
    "```Traceback (most recent call last):\n  File \"app.py\", line 3\nKeyError: 'id'```",
    "\x00\u200f\ufeff",
    "refund " * 50_000,
]


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="module")
def router(config: Config) -> LocalRouter:
    return LocalRouter.from_config(config)


def route(router: LocalRouter, text: str) -> RouteDecision:
    return asyncio.run(router.route(text))


@pytest.mark.parametrize(("message", "expected"), CLEAR_MESSAGES)
def test_clear_messages_reach_their_route_confidently(
    router: LocalRouter, message: str, expected: str
) -> None:
    decision = route(router, message)

    assert decision.route == expected, decision.reason
    assert decision.confidence >= 0.7, decision.reason


@pytest.mark.parametrize(("message", "expected"), LOOK_ALIKES)
def test_innocent_look_alikes_are_never_escalated_without_asking_the_llm(
    config: Config, router: LocalRouter, message: str, expected: str
) -> None:
    decision = asyncio.run(RulesThenLocal(RulesRouter(config), router).route(message))
    asks_the_llm = deferral(decision, threshold=config.router.confidence_threshold,
                            severity_threshold=config.router.severity_threshold, escalation_route="escalate")

    assert decision.route == expected or asks_the_llm, decision.reason
    assert decision.route != "escalate" or asks_the_llm, decision.reason


# Written for these tests: something stopped, and people wait or work by hand, in industries the training data
# hardly mentions; none says "urgent", "outage" or "escalate".
STOPPAGES_WITH_IMPACT = [
    "The ticketing system at our ferry terminal stopped printing boarding cards an hour ago; passengers are "
    "queuing at the gate and staff are writing them by hand.",
    "Since the sync broke at 6 our bakery counters are taking orders on paper and customers are waiting out the door.",
    "the cinema box office system is down, staff are selling tickets manually and the 7pm shows are about to start",
]


@pytest.mark.parametrize("message", STOPPAGES_WITH_IMPACT)
def test_a_stoppage_that_leaves_people_waiting_is_escalated_or_asked_about(
    config: Config, router: LocalRouter, message: str
) -> None:
    decision = asyncio.run(RulesThenLocal(RulesRouter(config), router).route(message))
    asks_the_llm = deferral(decision, threshold=config.router.confidence_threshold,
                            severity_threshold=config.router.severity_threshold, escalation_route="escalate")

    assert decision.route == "escalate" or asks_the_llm, decision.reason


def test_the_impact_term_needs_both_a_stoppage_and_people_feeling_it() -> None:
    assert IMPACT_TERM in terms("the scanners stopped and pickers are idle")[0]
    assert IMPACT_TERM not in terms("the scanners stopped after the update")[0]
    assert IMPACT_TERM not in terms("pickers are idle between waves, can we batch them?")[0]


def test_a_decision_says_who_decided_why_and_how_long_it_took(router: LocalRouter) -> None:
    decision = route(router, "I was charged twice for my subscription")

    assert router.name == "local"
    assert decision.decided_by == "local"
    assert re.fullmatch(r"local classifier: billing \d\.\d\d \(next [a-z]+ \d\.\d\d\); severity \d\.\d\d",
                        decision.reason)
    assert set(decision.scores) == DEFAULT_ROUTES
    assert decision.scores["billing"] == pytest.approx(decision.confidence)
    assert decision.latency_ms > 0


@pytest.mark.parametrize("text", WEIRD_INPUTS, ids=lambda text: repr(text[:12]))
def test_any_input_gets_a_configured_route_and_scores_that_sum_to_one(router: LocalRouter, text: str) -> None:
    decision = route(router, text)

    assert decision.route in DEFAULT_ROUTES
    assert set(decision.scores) == DEFAULT_ROUTES
    assert sum(decision.scores.values()) == pytest.approx(1.0)
    assert 0.0 <= decision.confidence <= 1.0


@pytest.mark.parametrize("text", ["", "👍", "asdf qwerty zxcv", "我的账单有问题，请帮忙", "lorem ipsum dolor sit amet"])
def test_text_it_cannot_read_goes_to_the_fallback_or_stays_unsure(
    config: Config, router: LocalRouter, text: str
) -> None:
    decision = route(router, text)

    assert decision.confidence < config.router.confidence_threshold
    if not text.strip() or text == "👍":
        assert decision.route == config.fallback_route


def test_messages_without_a_topic_score_lower_than_clear_ones(router: LocalRouter) -> None:
    clear = [route(router, text).confidence for text, _ in CLEAR_MESSAGES]
    vague = [route(router, text).confidence
             for text in ["hmm", "can you check this for me", "what about the other one"]]

    assert max(vague) < 0.7 <= min(clear)


def test_confidence_is_calibrated_on_routes_the_model_has_not_memorised(router: LocalRouter) -> None:
    # Confident answers are mostly right; the threshold sends the rest to the LLM in hybrid mode.
    confident = [(text, expected) for text, expected in CLEAR_MESSAGES + LOOK_ALIKES
                 if route(router, text).confidence >= 0.9]
    right = [route(router, text).route == expected for text, expected in confident]

    assert len(confident) >= len(CLEAR_MESSAGES) // 2
    assert sum(right) / len(right) >= 0.9


def test_huge_messages_are_read_by_their_head_and_tail(router: LocalRouter) -> None:
    # Speed is measured in benchmarks/router_latency.py; here: a 1 MB message is cut, not read whole.
    text = "My invoice is wrong, I was charged twice. " + "blah " * 200_000 + " Please refund me."

    assert len(normalize(text)) <= HEAD_CHARS + TAIL_CHARS + 1
    assert "refund" in normalize(text) and "invoice" in normalize(text)
    assert route(router, text).route == "billing"


def test_a_reviewer_correction_changes_the_route_of_that_message(router: LocalRouter) -> None:
    text = "how do I close my account"
    before = route(router, text)
    corrected_to = "escalate" if before.route != "escalate" else "general"

    retrained = router.retrain([LabeledText(text, corrected_to)])
    after = route(retrained, text)
    again = route(retrained, "  How do I close my ACCOUNT?  ")

    assert after.route == corrected_to
    assert after.decided_by == "local"
    assert "corrected" in after.reason
    assert again.route == corrected_to
    assert route(router, text).route == before.route, "retraining returns a new router"


def test_retraining_takes_the_full_list_so_a_withdrawn_correction_is_forgotten(router: LocalRouter) -> None:
    text = "how do I close my account"
    original = route(router, text).route

    corrected = router.retrain([LabeledText(text, "sales")])
    withdrawn = corrected.retrain([])

    assert route(corrected, text).route == "sales"
    assert route(withdrawn, text).route == original


def test_corrections_also_teach_the_classifier_about_similar_messages(router: LocalRouter) -> None:
    taught = [LabeledText(f"the quarterly zebra report for team {n} is late", "escalate") for n in range(4)]

    retrained = router.retrain(taught)

    assert route(retrained, "the quarterly zebra report for team 9 is late").route == "escalate"


def test_corrections_for_a_route_that_is_not_configured_are_ignored(router: LocalRouter) -> None:
    retrained = router.retrain([LabeledText("where is my invoice", "hr")])

    decision = route(retrained, "where is my invoice")
    assert decision.route in DEFAULT_ROUTES


def tiny_config(*, shipped: bool) -> Config:
    return parse_config(
        f"""
        fallback_route = "chitchat"
        [router]
        use_shipped_training_data = {str(shipped).lower()}
        [routes.payroll]
        persona = "payroll clerk"
        examples = ["my payslip is wrong", "when do we get paid this month"]
        [routes.laptops]
        persona = "IT desk"
        examples = ["my laptop will not boot", "the vpn keeps dropping"]
        [routes.chitchat]
        persona = "friendly colleague"
        examples = ["hi there", "thanks a lot"]
        [routes.facilities]
        persona = "office manager"
        """,
        source=None,
    )


@pytest.mark.parametrize("shipped", [False, True])
def test_a_tiny_config_with_two_examples_a_route_works(shipped: bool) -> None:
    config = tiny_config(shipped=shipped)
    router = LocalRouter.from_config(config)
    routes = set(config.routes)

    assert route(router, "my payslip is wrong again").route == "payroll"
    assert route(router, "the vpn is dropping every hour").route == "laptops"
    for text in ["hello", "", "🙂", "where is my invoice", "x" * 10_000]:
        decision = route(router, text)
        assert decision.route in routes
        assert set(decision.scores) == routes
        # A route without examples is a valid answer key that is never chosen.
        assert decision.scores["facilities"] == pytest.approx(0.0, abs=1e-9)
        assert decision.route != "facilities"


def test_a_handful_of_examples_does_not_sound_certain() -> None:
    router = LocalRouter.from_config(tiny_config(shipped=False))

    seen = route(router, "my laptop will not boot")
    unseen = route(router, "hello, quick question about the fridge")

    assert seen.route == "laptops"
    assert seen.confidence < 0.95
    assert unseen.confidence < 0.7


def test_the_classifier_copes_with_duplicates_empty_texts_and_missing_routes() -> None:
    examples = [
        LabeledText("refund please", "billing"),
        LabeledText("refund please", "billing"),
        LabeledText("refund please", "billing"),
        LabeledText("", "billing"),
        LabeledText("   ", "technical"),
        LabeledText("the app crashes on start", "technical"),
        LabeledText("error 500 when I save", "technical"),
        LabeledText("this route is not configured", "hr"),
    ]

    classifier = LocalClassifier.train(examples, ["billing", "technical", "sales"])
    predictions = classifier.predict_many(["refund please", "app crashes", "🙂"])

    assert [p.route for p in predictions[:2]] == ["billing", "technical"]
    for prediction in predictions:
        assert isinstance(prediction, Prediction)
        assert set(prediction.scores) == {"billing", "technical", "sales"}
        assert prediction.scores["sales"] == 0.0
        assert sum(prediction.scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("examples", [[], [LabeledText("refund please", "billing")]])
def test_with_nothing_to_tell_apart_the_classifier_answers_the_fallback_unsure(
    examples: list[LabeledText],
) -> None:
    classifier = LocalClassifier.train(examples, ["billing", "technical"], fallback="technical")

    prediction = classifier.predict("refund please")

    assert prediction.route == "technical"
    assert prediction.confidence == pytest.approx(0.5)


def test_a_classifier_needs_routes() -> None:
    with pytest.raises(ValueError, match="at least one route"):
        LocalClassifier.train([LabeledText("hi", "general")], [])


def test_shipped_training_data_is_attributed_and_never_contains_bitext() -> None:
    rows = shipped_training_data()
    folder = Path(__file__).parents[2] / "bot" / "router" / "data"
    raw = "".join((folder / name).read_text("utf-8") for name in ("training.jsonl", "realistic.jsonl"))
    readme = (folder / "README.md").read_text("utf-8")

    assert len(rows) >= 3000
    assert {row.route for row in rows} == DEFAULT_ROUTES
    assert "bitext" not in raw.lower()
    sources = set(re.findall(r'"source": "([^"]+)"', raw))
    assert sources == {"supportbot", "supportbot-realistic", "banking77", "clinc150"}
    assert "CC BY 4.0" in readme and "CC BY 3.0" in readme


def test_turning_off_the_shipped_data_trains_on_the_config_examples_alone() -> None:
    config = parse_config("[router]\nuse_shipped_training_data = false\n", source=None)

    router = LocalRouter.from_config(config)

    assert route(router, "I was charged twice this month").route == "billing"
    assert route(router, "where is my order?").route == "general"


def test_the_severity_axis_follows_whichever_route_escalates_whatever_its_name() -> None:
    config = parse_config(
        """
        fallback_route = "questions"
        [router]
        use_shipped_training_data = false
        [routes.orders]
        persona = "order desk"
        examples = ["where is my parcel", "can I change my delivery address", "my order arrived damaged"]
        [routes.questions]
        persona = "helpdesk"
        examples = ["what are your opening hours", "do you have a shop in Leeds", "hello there"]
        [routes.pager]
        persona = "duty manager"
        escalate = true
        examples = ["the warehouse is flooding and the alarm is silent", "a stranger can see our customers' data",
                    "our whole shop is down and we are losing sales"]
        """,
        source=None,
    )
    router = LocalRouter.from_config(config)

    assert config.escalation_route == "pager" and router.classifier.escalation_route == "pager"
    assert set(router.classifier.topic_routes) == {"orders", "questions"}
    decision = route(router, "where is my parcel, it was due Monday")
    assert decision.route == "orders" and set(decision.scores) == {"orders", "questions", "pager"}
    assert decision.scores["pager"] < 0.5
    assert "severity" in decision.reason

"""The built-in escalation rules: threats and demands for a human escalate, innocent look-alikes do not."""

from __future__ import annotations

import re

import pytest

from bot.config import load_config, parse_config
from bot.router.rules import RulesRouter

# (message, the rule that must catch it)
THREATS = [
    ("I'll be contacting my lawyer about this", "legal-threat"),
    ("My lawyer will be in touch.", "legal-threat"),
    ("We are considering legal action against your company", "legal-threat"),
    ("I’m going to sue you", "legal-threat"),
    ("I'm forwarding this to our legal team", "legal-threat"),
    ("see you in small claims court", "legal-threat"),
    ("I will report you to the financial ombudsman", "regulator-or-police"),
    ("I'm filing a complaint with the CFPB tomorrow", "regulator-or-police"),
    ("reporting this to the FCA", "regulator-or-police"),
    ("This is a violation of GDPR", "regulator-or-police"),
    ("I'm reporting this to the police", "regulator-or-police"),
    ("someone hacked my account", "hacked-account"),
    ("My account has been compromised!!", "hacked-account"),
    ("hackers took over our workspace", "hacked-account"),
    ("there was a login from Brazil that wasn't me", "hacked-account"),
    ("your data breach exposed my home address to me and others", "data-breach"),
    ("my personal data was leaked", "data-breach"),
    ("you sent my personal details to a stranger", "data-breach"),
    ("I'm going to post about this on Twitter", "going-public"),
    ("Leaving a one-star review everywhere", "going-public"),
    ("if this isn't fixed today I'll file a chargeback", "chargeback-threat"),
    ("I'm going to dispute this with my bank", "chargeback-threat"),
    ("you stole my money", "chargeback-threat"),
    ("I'm cancelling unless someone senior calls me today", "senior-or-cancel-threat"),
    ("if nobody contacts me by Friday we're moving to a competitor", "senior-or-cancel-threat"),
    ("let me talk to a manager", "wants-a-human"),
    ("I want to speak to a real person", "wants-a-human"),
    ("can I chat with a live agent", "wants-a-human"),
    ("i dont know what to do to talk to a fucking live agent", "wants-a-human"),
    ("put me through to someone", "wants-a-human"),
    ("get me a human", "wants-a-human"),
    ("Human please!", "wants-a-human"),
    ("please escalate this", "wants-a-human"),
    ("can somebody call me back?", "wants-a-human"),
    ("How do I file a complaint?", "complaint"),
    ("I want to lodge a formal complaint", "complaint"),
    ("where could I file a reclamation", "complaint"),
    ("I want to complain about your driver", "complaint"),
    ("this is the third time I'm writing about this", "complaint"),
    ("I have emailed you four times", "complaint"),
    ("still no reply from anyone", "complaint"),
    ("third time I'm asking for this invoice", "complaint"),
    ("I want to talk to a human about my refund, now", "wants-a-human"),
    ("we will leave a bad review everywhere", "going-public"),
    ("this is a GDPR violation", "regulator-or-police"),
]

# Messages that mention lawyers, managers, humans, agents or complaints and want nothing of the sort.
LOOK_ALIKES = [
    "our lawyer needs a copy of the invoice",
    "our lawyer will need the signed contract",
    "Sue from accounting asked for the receipts",
    "how do I add my manager as an admin",
    "let me talk to my manager and get back to you",
    "is the human resources module included in Business?",
    "are you a real person?",
    "could you tell me if you're a real person",
    "would you call yourself a human or a computer",
    "can I talk to someone in sales about pricing",
    "how do I contact customer service?",
    "how do I transfer money to someone else",
    "our support agents can't log in",
    "how many agents can we have on the Business plan?",
    "does your product hand chats over to a human agent?",
    "the complaint form on your website shows an error",
    "how do I see customer complaints in the dashboard",
    "do you have a data breach policy?",
    "what happens in case of a security breach?",
    "are you regulated by the FCA?",
    "can I export a report for the FCA",
    "can I share the dashboard on LinkedIn",
    "do you have a Twitter account?",
    "what is your chargeback fee",
    "we received a chargeback from one of our customers, what now?",
    "how do I dispute a charge",
    "did someone who is unauthorized try to get into my bank account",
    "Has someone accessed my card? there are payments I did not make",
    "how do I cancel my subscription",
    "can I move our seats to another workspace",
    "thank you, you have been a real help",
    "how do I set up escalation rules for my team",
    "I want to file an expense claim",
    "I got my card for the third time this year",
    # A person from sales, an internal escalation, procurement talk, hypotheticals and policy questions.
    "can i talk to a human sales rep about 500 seats?",
    "could we talk to someone about enterprise pricing for 300 users",
    "we'd love to speak with someone senior on your sales side about a multi-year deal",
    "I need to escalate this internally, can you send a quote?",
    "is there a way to talk to an agent in the chat widget after hours?",
    "filing a complaint with our insurer, can you send the invoice copy",
    "this is the third time we've bought extra seats this year, any volume discount?",
    "I'll forward the DPA to our legal team for review",
    "our lawyer will be in touch about the MSA redlines",
    "what happens if my account is compromised?",
    "do you offer account takeover protection?",
    "what's your breach notification policy for our data?",
    "we'll leave a review on G2, love the product",
    "how do you handle a GDPR breach notification?",
    "feature request: an 'escalate to supervisor' button",
    "we want to write a case study, who do we talk to",
]


@pytest.fixture(scope="module")
def rules() -> RulesRouter:
    return RulesRouter(load_config())


@pytest.mark.parametrize(("message", "rule"), THREATS)
def test_threats_and_demands_for_a_human_escalate(rules: RulesRouter, message: str, rule: str) -> None:
    decision = rules.match(message)

    assert decision is not None, f"no rule caught {message!r}"
    assert decision.route == "escalate"
    assert decision.decided_by == "rules"
    assert f"rule {rule!r} matched" in decision.reason


@pytest.mark.parametrize("message", LOOK_ALIKES)
def test_innocent_look_alikes_are_left_to_the_classifier(rules: RulesRouter, message: str) -> None:
    decision = rules.match(message)

    assert decision is None, f"{message!r} was escalated: {decision.reason if decision else ''}"


def test_every_built_in_rule_is_named_escalates_and_is_exercised() -> None:
    config = load_config()
    names = [rule.name for rule in config.router.rules]

    assert all(names), "every rule needs a name for the logs"
    assert len(set(names)) == len(names)
    assert {rule.route for rule in config.router.rules} == {"escalate"}
    assert {rule for _, rule in THREATS} == set(names)


def test_legal_and_security_threats_outrank_a_plain_request_for_a_human(rules: RulesRouter) -> None:
    decision = rules.match("get me a manager or my lawyer will be in touch")

    assert decision is not None
    assert "legal-threat" in decision.reason


def test_rules_still_match_text_with_slack_markup_and_curly_quotes(rules: RulesRouter) -> None:
    decision = rules.match("<@U0123BOT> I’ll be contacting my lawyer — see <https://example.com|this>")

    assert decision is not None and decision.route == "escalate"


def test_a_users_config_without_rules_matches_nothing() -> None:
    config = parse_config('[router]\nrules = []\n', source=None)

    assert RulesRouter(config).match("I'm going to sue you") is None


def test_every_pattern_is_readable_enough_to_review() -> None:
    # Long patterns span lines in verbose mode; a single line that long would not be reviewed.
    for rule in load_config().router.rules:
        longest = max(len(line) for line in rule.pattern.splitlines())
        assert longest <= 160, f"rule {rule.name!r} has a {longest}-character line"
        assert re.compile(rule.pattern).flags & re.IGNORECASE

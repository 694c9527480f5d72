"""Escalation to on-call people: who is on call, the page, its delivery rounds, and the state machine."""

from bot.escalation.page import ACK_ACTION, REQUEST_ACTION, RESOLVE_ACTION, Audience, Page
from bot.escalation.report import EscalationSummary, list_escalations, oncall_report
from bot.escalation.roster import Coverage, OnCallBasis, Roster
from bot.escalation.service import (
    LOCAL_ONCALL_USER,
    ActionResult,
    EscalationRequest,
    EscalationService,
    RequestTrigger,
    parse_escalation_id,
)

__all__ = [
    "ACK_ACTION", "LOCAL_ONCALL_USER", "REQUEST_ACTION", "RESOLVE_ACTION", "ActionResult", "Audience", "Coverage",
    "EscalationRequest", "EscalationService", "EscalationSummary", "OnCallBasis", "Page", "RequestTrigger", "Roster",
    "list_escalations", "oncall_report", "parse_escalation_id",
]

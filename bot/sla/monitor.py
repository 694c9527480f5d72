"""The SLA sweep: measures met clocks, warns the escalation channel before a target is missed, records misses.

Runs on every replica from the background loop; each step claims its clock with a conditional UPDATE first
(storage.sla), so a warning is posted once and a breach counted once however many replicas sweep.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from bot.clock import Clock
from bot.config import Config
from bot.domain import SlaWarning
from bot.errors import TransportError
from bot.metrics import Metrics
from bot.ports import ChatPort
from bot.sla.policy import SlaPolicy
from storage import sla as clocks
from storage.engine import Database

log = structlog.get_logger(__name__)

SWEEP_BATCH = 100


class SlaMonitor:
    def __init__(self, config: Config, db: Database, chat: ChatPort, clock: Clock, metrics: Metrics) -> None:
        self.policy = SlaPolicy(config.sla)
        self._db = db
        self._chat = chat
        self._clock = clock
        self._metrics = metrics
        # Warnings go where pages go; with no channel they are recorded and logged only.
        self.channel = config.escalation.channel or chat.capabilities.local_page_channel

    async def sweep_clocks(self) -> int:
        """One pass: returns how many clocks it measured, warned about or recorded as breached."""
        now = self._clock.now()
        return await self._measure() + await self._warn(now) + await self._breach(now)

    async def _measure(self) -> int:
        async with self._db.sessions() as session:
            met = await clocks.unmeasured(session, limit=SWEEP_BATCH)
        measured = 0
        for clock in met:
            elapsed = self.policy.elapsed_s(clock.metric, clock.started_at, clock.met_at)
            async with self._db.sessions.begin() as session:
                won = await clocks.record_elapsed(session, clock.id, elapsed_s=elapsed)
            if won:
                self._metrics.sla_seconds.labels(clock.metric).observe(elapsed)
                measured += 1
        return measured

    async def _warn(self, now: datetime) -> int:
        async with self._db.sessions() as session:
            due = await clocks.due_warnings(session, now=now, limit=SWEEP_BATCH)
        warned = 0
        for clock in due:
            async with self._db.sessions.begin() as session:
                if not await clocks.claim_warning(session, clock.id, now=now):
                    continue  # another replica warns about this one
            if await self._post_warning(clock):
                self._metrics.sla_warnings.labels(clock.metric).inc()
                warned += 1
            else:
                async with self._db.sessions.begin() as session:
                    await clocks.release_warning(session, clock.id, claimed_at=now)
        return warned

    async def _post_warning(self, clock: clocks.DueClock) -> bool:
        """Post the warning; False when it could not be (the next pass tries again)."""
        log.warning("sla_warning", metric=clock.metric, channel=clock.channel, thread_ts=clock.thread_ts,
                    route=clock.route, deadline=clock.deadline.isoformat(), escalation_id=clock.escalation_id)
        if self.channel is None:
            return True
        warning = SlaWarning(metric=clock.metric, channel=clock.channel, thread_ts=clock.thread_ts,
                             route=clock.route, target_s=clock.target_s, deadline=clock.deadline,
                             escalation_id=clock.escalation_id,
                             permalink=clock.permalink or await self._permalink(clock))
        try:
            await self._chat.post_sla_warning(self.channel, warning)
        except TransportError as exc:
            log.warning("sla_warning_not_posted", channel=self.channel, error=str(exc))
            return False
        return True

    async def _permalink(self, clock: clocks.DueClock) -> str | None:
        try:
            return await self._chat.permalink(clock.channel, clock.thread_ts)
        except Exception as exc:  # the warning is more useful without a link than not at all
            log.warning("permalink_unavailable", channel=clock.channel, ts=clock.thread_ts, error=str(exc))
            return None

    async def _breach(self, now: datetime) -> int:
        async with self._db.sessions() as session:
            due = await clocks.due_breaches(session, now=now, limit=SWEEP_BATCH)
        breached = 0
        for clock in due:
            async with self._db.sessions.begin() as session:
                won = await clocks.claim_breach(session, clock)
            if won:
                log.warning("sla_breached", metric=clock.metric, channel=clock.channel, thread_ts=clock.thread_ts,
                            route=clock.route, deadline=clock.deadline.isoformat(),
                            escalation_id=clock.escalation_id)
                self._metrics.sla_breaches.labels(clock.metric).inc()
                breached += 1
        return breached

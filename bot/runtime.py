"""The composition root: builds every part from settings and config, and owns start-up and shutdown order."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from bot.clock import Clock, SystemClock
from bot.config import Config
from bot.escalation import EscalationService
from bot.feedback import FeedbackService
from bot.grounding import Knowledge
from bot.llm.base import LLM
from bot.llm.breaker import CircuitBreaker
from bot.llm.fallback import FallbackLLM
from bot.llm.offline import OfflineLLM
from bot.llm.recording import RecordingLLM
from bot.local_chat import LocalChat
from bot.metrics import Metrics
from bot.pipeline import Pipeline
from bot.ports import ChatPort
from bot.router.base import Router
from bot.router.hybrid import HybridRouter, RulesThenLocal
from bot.router.llm import LLMRouter
from bot.router.local import LabeledText, LocalRouter
from bot.router.rules import RulesRouter
from bot.settings import Settings
from bot.sla.monitor import SlaMonitor
from bot.voting import Voter
from bot.worker import Dispatcher
from handlers.registry import HandlerRegistry
from storage import repositories as repo
from storage.engine import Database, open_database, upgrade

log = structlog.get_logger(__name__)


def build_router(config: Config, llm: LLM, local: LocalRouter, mode: str | None = None) -> Router:
    mode = mode or config.router.mode
    rules = RulesRouter(config)
    if mode == "rules":
        return rules
    if mode == "local":
        return RulesThenLocal(rules, local)
    if mode == "llm":
        return LLMRouter(config, llm)
    return HybridRouter(rules, local, LLMRouter(config, llm), config.router.confidence_threshold,
                        config.router.severity_threshold)


def make_llm(settings: Settings, config: Config, local: LocalRouter) -> LLM:
    if settings.llm_online:
        from bot.llm.anthropic import AnthropicLLM

        # The provider paces itself against a real server, so it keeps the system clock even when the rest
        # of the bot runs on a manual one (tests that step through cooldowns and re-pages).
        return AnthropicLLM(settings, config)

    def classify(text: str) -> tuple[str, float]:
        prediction = local.classifier.predict(text)
        return prediction.route, prediction.confidence

    return OfflineLLM(config, classify=classify)


@dataclass
class Runtime:
    settings: Settings
    config: Config
    db: Database
    clock: Clock
    metrics: Metrics
    chat: ChatPort
    # fallback step -> circuit breaker -> call recorder -> provider
    llm: FallbackLLM
    local_router: LocalRouter
    # The docs: answers are grounded in them, the dashboard reviews what joins them.
    knowledge: Knowledge
    pipeline: Pipeline
    escalations: EscalationService
    feedback: FeedbackService
    sla: SlaMonitor
    dispatcher: Dispatcher
    instance_id: str

    async def retrain_local_router(self) -> int:
        """Retrain the local classifier with every reviewer correction; returns how many were used."""
        corrections = await training_corrections(self.db, self.config)
        retrained = await asyncio.to_thread(self.local_router.retrain, corrections)
        self.local_router = retrained
        self.pipeline.router = build_router(self.config, self.llm, retrained)
        log.info("local_router_retrained", corrections=len(corrections))
        return len(corrections)

    async def start(self) -> None:
        """Take back what this replica left unfinished, then keep recovering the inbox and sweeping escalations,
        SLA clocks and threads that went quiet."""
        async with self.db.sessions.begin() as session:
            orphans = await repo.release_own_leases(session, owner=self.instance_id, now=self.clock.now())
        if orphans:
            log.info("taking_back_unfinished_work", count=orphans)
        interval = self.settings.supportbot_recovery_interval_s
        sweeps = (self.escalations.sweep, self.sla.sweep_clocks, self.feedback.settle)
        self.dispatcher.start_background(sweeps=sweeps, recovery_interval_s=interval, sweep_interval_s=interval)
        await self.dispatcher.recover()

    async def drain(self) -> None:
        """Stop taking work and let messages in flight finish, for up to SUPPORTBOT_DRAIN_TIMEOUT_S."""
        left = await self.dispatcher.drain(self.settings.supportbot_drain_timeout_s)
        if left:
            log.warning("shutdown_left_work", unfinished=left)

    async def close(self) -> None:
        """Drain (if not done yet), then close the model client, the chat's connections and the database."""
        await self.drain()
        await self.llm.close()
        # The Slack transport holds a pooled HTTP session; the local one has nothing to close.
        close_chat = getattr(self.chat, "close", None)
        if close_chat is not None:
            await close_chat()
        await self.db.dispose()


async def training_corrections(db: Database, config: Config) -> list[LabeledText]:
    """Every reviewer correction to a configured route, as training examples for the local router."""
    async with db.sessions() as session:
        return [LabeledText(text, route) for text, route in await repo.corrections_for_training(session)
                if route in config.routes]


@asynccontextmanager
async def open_runtime(settings: Settings, config: Config, **options: Any) -> AsyncIterator[Runtime]:
    """The whole bot (see build_runtime), closed on the way out."""
    runtime = await build_runtime(settings, config, **options)
    try:
        yield runtime
    finally:
        await runtime.close()


async def build_runtime(
    settings: Settings, config: Config, *, chat: ChatPort | None = None, clock: Clock | None = None,
    llm: LLM | None = None, migrate: bool = True, instance_id: str | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    if migrate:
        await upgrade(settings.database_url)
    db = open_database(settings.database_url)
    metrics = Metrics()
    # Trained in a child process, or loaded from the model store when nothing it learns from changed.
    local = LocalRouter.from_config(config, await training_corrections(db, config))
    # Every call is recorded, including a failed one before the fallback model is tried; a model that keeps
    # failing is skipped for a while, so the fallback model (or, in a full outage, the honest note) comes at once.
    recorded = RecordingLLM(llm or make_llm(settings, config, local), db, clock, metrics)
    stack = FallbackLLM(CircuitBreaker(recorded, config.llm, clock, metrics), config.llm, clock)
    chat = chat or LocalChat(clock)
    escalations = EscalationService(config, db, chat, clock)
    feedback = FeedbackService(config, db, chat, clock, escalations.roster)
    knowledge = Knowledge(db, config, clock)
    instance = instance_id or settings.supportbot_instance_id or f"{socket.gethostname()}:{os.getpid()}"
    pipeline = Pipeline(
        config=config, db=db, router=build_router(config, stack, local), handlers=HandlerRegistry(config),
        voter=Voter(config, stack), escalations=escalations, chat=chat, llm=stack, clock=clock,
        metrics=metrics, instance_id=instance, lease=timedelta(seconds=settings.supportbot_lease_s),
        knowledge=knowledge,
    )
    dispatcher = Dispatcher(pipeline, concurrency=config.bot.max_concurrency, metrics=metrics, clock=clock)
    log.info("runtime_ready", llm=stack.provider, router=config.router.mode, database=db.dialect,
             instance=instance, corrections=len(local.corrections))
    return Runtime(settings=settings, config=config, db=db, clock=clock, metrics=metrics, chat=chat,
                   llm=stack, local_router=local, knowledge=knowledge, pipeline=pipeline, escalations=escalations,
                   feedback=feedback, sla=SlaMonitor(config, db, chat, clock, metrics), dispatcher=dispatcher,
                   instance_id=instance)

"""The Slack Web API client: one AsyncWebClient with the SDK's retry handlers, bounded and safe to resend."""

from __future__ import annotations

from typing import Final

import aiohttp
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

DEFAULT_TIMEOUT_S: Final = 10.0
# Each kind of failure is retried at most this often; the pipeline retries whole messages later.
MAX_RETRIES: Final = 2
# A longer Retry-After is not waited out inside a call: the caller fails and retries later instead.
MAX_RETRY_AFTER_S: Final = 30
# Posting a message twice is visible to people. When Slack may have received the request (a 5xx, or a
# connection cut after sending), these methods are not resent here: the pipeline looks for the tagged
# reply first (`SlackChat.find_reply`) and posts again only when it is not there.
NOT_SAFE_TO_RESEND: Final = frozenset({"chat.postMessage"})


def _method_of(request: HttpRequest) -> str:
    return request.url.rstrip("/").rsplit("/", 1)[-1]


class _RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """429: Slack did not process the call, so any method may wait `Retry-After` and try again."""

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
        try:
            retry_after = int(values[0])
        except (ValueError, IndexError):
            retry_after = 1
        return retry_after <= MAX_RETRY_AFTER_S


class _ServerErrorRetry(AsyncServerErrorRetryHandler):
    """500/503: resent, except for calls whose first attempt may already have taken effect."""

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method_of(request) in NOT_SAFE_TO_RESEND:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class _ConnectionErrorRetry(AsyncConnectionErrorRetryHandler):
    """Connection failures: always resent when no connection was made, otherwise only when harmless."""

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if isinstance(error, aiohttp.ClientConnectorError):
            return True  # never reached Slack
        if _method_of(request) in NOT_SAFE_TO_RESEND:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


def retry_handlers(max_retries: int = MAX_RETRIES) -> list[AsyncRetryHandler]:
    return [
        _RateLimitRetry(max_retry_count=max_retries),
        _ServerErrorRetry(max_retry_count=max_retries),
        _ConnectionErrorRetry(max_retry_count=max_retries),
    ]


def build_web_client(
    token: str, *, base_url: str | None = None, session: aiohttp.ClientSession | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S, retries: bool = True,
) -> AsyncWebClient:
    """`base_url` is SLACK_API_URL (fakes, tests); without `retries` every failure surfaces at once."""
    options: dict[str, object] = {}
    if base_url:
        options["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
    return AsyncWebClient(
        token=token, session=session, timeout=int(max(1, timeout_s)),
        retry_handlers=retry_handlers() if retries else [], **options,  # type: ignore[arg-type]
    )

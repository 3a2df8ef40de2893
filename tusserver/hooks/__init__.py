"""Hooks: upload events for other systems, and an operator's gate on new uploads.

Owns what the configuration turns on (``Hooks.from_settings``) and running it for the app's
lifespan: the webhook listener (``webhook``), the pre-create hook (``precreate``), the event
bodies (``events``) and their signatures (``signing``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tusserver.hooks.precreate import PreCreateHook, screen_creation
from tusserver.hooks.webhook import WebhookListener
from tusserver.settings import Settings

__all__ = ["Hooks", "PreCreateHook", "WebhookListener", "screen_creation"]


@dataclass(frozen=True)
class Hooks:
    webhook: WebhookListener | None = None
    pre_create: PreCreateHook | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Hooks:
        return cls(
            webhook=WebhookListener.from_settings(settings) if settings.webhook_url else None,
            pre_create=(
                PreCreateHook.from_settings(settings) if settings.pre_create_hook_url else None
            ),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the HTTP clients and the webhook sender; drain briefly and close on exit."""
        async with contextlib.AsyncExitStack() as stack:
            for hook in (self.webhook, self.pre_create):
                if hook is not None:
                    await stack.enter_async_context(hook.running())
            yield

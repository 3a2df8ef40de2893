"""Hooks: upload events for other systems, and an operator's gate on new uploads.

Owns what the configuration turns on (``Hooks.from_settings``) and running it for the app's
lifespan: the webhook listener (``webhook``), the pre-create hook (``precreate``: a URL, or
``callables``: a Python function of an application that embeds us), the event bodies
(``events``) and their signatures (``signing``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from tusserver.hooks.callables import PreCreateFn, PreCreateFunction
from tusserver.hooks.precreate import PreCreateHook, screen_creation
from tusserver.hooks.webhook import WebhookListener
from tusserver.settings import Settings

__all__ = ["CreationGate", "Hooks", "PreCreateHook", "WebhookListener", "screen_creation"]


class CreationGate(Protocol):
    """Asked before an upload is created: the metadata to add, or a ``TusError``."""

    def running(self) -> AbstractAsyncContextManager[object]: ...

    async def screen(self, upload: Mapping[str, Any]) -> dict[str, str]: ...


@dataclass(frozen=True)
class Hooks:
    webhook: WebhookListener | None = None
    pre_create: CreationGate | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, pre_create: PreCreateFn | None = None) -> Hooks:
        """The configured hooks; ``pre_create``: a Python gate instead of the URL hook."""
        if pre_create is not None and settings.pre_create_hook_url:
            raise ValueError("give a pre-create function or TUS_PRE_CREATE_HOOK_URL, not both")
        gate: CreationGate | None = None
        if pre_create is not None:
            gate = PreCreateFunction(pre_create)
        elif settings.pre_create_hook_url:
            gate = PreCreateHook.from_settings(settings)
        return cls(
            webhook=WebhookListener.from_settings(settings) if settings.webhook_url else None,
            pre_create=gate,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the HTTP clients and the webhook sender; drain briefly and close on exit."""
        async with contextlib.AsyncExitStack() as stack:
            for hook in (self.webhook, self.pre_create):
                if hook is not None:
                    await stack.enter_async_context(hook.running())
            yield

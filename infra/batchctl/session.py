"""What every command shares: the API client made from --url / --api-key, --json, and the watch options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from infra.batchctl.client import Api, open_api

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(kw_only=True)
class Session:
    """The root command's options; the client is built on first use, so --help needs no key."""

    url: str | None
    api_key: str | None
    _api: Api | None = field(default=None, repr=False)

    def api(self) -> Api:
        if self._api is None:
            self._api = open_api(url=self.url, api_key=self.api_key)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.http.close()


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.find_root().meta["json"] = True
    return value


def json_option(command: F) -> F:
    """`--json` on a command (the root command takes it too)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_json,
        help="machine-readable output (JSON; JSON lines while watching)",
    )(command)


def watch_options(command: F) -> F:
    command = click.option(
        "--interval",
        type=click.FloatRange(min=0.1),
        default=0.5,
        show_default=True,
        help="seconds between polls while watching",
    )(command)
    return click.option("--watch", is_flag=True, help="follow the job with a progress bar until it ends")(
        command
    )


def pass_api(command: Callable[..., Any]) -> Callable[..., Any]:
    """Call the command with the session's client as its first argument."""

    @functools.wraps(command)
    def with_api(*args: Any, **kwargs: Any) -> Any:
        session = click.get_current_context().find_object(Session)
        if session is None:  # only when a command is invoked outside the root group
            session = Session(url=None, api_key=None)
        return command(session.api(), *args, **kwargs)

    return with_api

"""The `batchctl` console script: one root command, its subcommands, one place for errors."""

from __future__ import annotations

from typing import Any

import click

from infra.batchctl import batches, operations, workloads
from infra.batchctl.client import CliError, dumps
from infra.batchctl.session import Session, json_option


class Root(click.Group):
    """Prints a CliError as one line (JSON with --json) on stderr and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            if ctx.meta.get("json"):
                click.echo(dumps(exc.to_json()), err=True)
            else:
                click.echo(f"error: {exc.line()}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--url", envvar="BATCH_URL", help="base URL of the functions (default: the local cloud, emulator.json)"
)
@click.option("--api-key", envvar="BATCH_API_KEY", help="API key (or BATCH_API_KEY)")
@json_option
@click.version_option(package_name="batch-platform", message="batchctl %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None) -> None:
    """Submit, watch and read the platform's batch jobs of every kind.

    Exit codes: 0 ok, 1 the server or the network refused, 2 bad usage or input, 3 a watched job ended
    without completing.
    """
    session = Session(url=url, api_key=api_key)
    ctx.obj = session
    ctx.call_on_close(session.close)


for command in (
    batches.submit,
    batches.watch,
    batches.status,
    batches.list_jobs,
    batches.cancel,
    batches.results,
    batches.credits,
    workloads.embed,
    workloads.analyze,
    workloads.images,
    operations.reports,
    operations.metrics,
    operations.analytics,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="batchctl")


if __name__ == "__main__":
    main()

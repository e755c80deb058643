"""``synthrelease VERB``: parse, call the library, print, set the exit code.

Exit codes: 0 success (gate passed); 1 gate failed or package failed verification; 2 bad input or usage (one line:
what, where, how to fix); 3 internal error. Heavy modules are imported inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click

from synthrelease import __version__
from synthrelease_cli.output import Output

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class SafeGroup(click.Group):
    """Turns library errors into one line and an exit code; a traceback only with ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        from synthrelease.errors import InputError, SynthReleaseError

        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except InputError as exc:
            _fail(exc.one_line(), EXIT_BAD_INPUT, debug)
        except SynthReleaseError as exc:
            _fail(exc.one_line(), EXIT_INTERNAL, debug)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing half-written was kept", err=True)
            ctx.exit(130)
        except Exception as exc:
            _fail(f"internal error: {type(exc).__name__}: {exc}; rerun with --debug for the traceback and "
                  "report it", EXIT_INTERNAL, debug)


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(cls=SafeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="synthrelease")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and requested output.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Release stand-alone synthetic CT/MRI datasets, audited for fidelity, privacy and utility.

    Workflow: phantoms or your data -> ingest -> train -> sample -> audit -> export -> verify.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Output(quiet=quiet, debug=debug)


def _register() -> None:
    from synthrelease_cli import cmd_audit, cmd_data, cmd_demo, cmd_generate, cmd_release, cmd_utility

    for command in (cmd_data.phantoms, cmd_data.ingest, cmd_data.info, cmd_generate.train, cmd_generate.sample,
                    cmd_audit.audit, cmd_audit.policies, cmd_utility.utility, cmd_release.keygen, cmd_release.export,
                    cmd_release.verify, cmd_demo.demo):
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="synthrelease")

"""The ``backupctl`` entry point: global options, command registration, error mapping.

This is the one place where exceptions become exit codes: a BackupctlError
prints one line on stderr and exits with its code; a traceback is shown only
with ``--debug``.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
import threading
import traceback

import botocore.exceptions
import click

from backupctl import __version__
from backupctl.cli.context import make_app
from backupctl.console import Console
from backupctl.errors import (
    EXIT_AUTH,
    EXIT_CODES_HELP,
    EXIT_DATA_PATH,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    BackupctlError,
)
from backupctl.retry import is_retryable

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# click >= 8.2 raises this (a UsageError) for a group run without a command: it shows the help.
_NO_ARGS_IS_HELP: tuple[type[click.ClickException], ...] = tuple(
    c for c in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if c is not None)


# Subcommands by name, imported when one is run (or listed by --help): a restore does not import
# the pipeline, schedule, agent and demo modules (PyYAML, croniter, ...): ~0.15 s of every command's start.
LAZY_COMMANDS = {
    "snapshot": "backupctl.cli.snapshot:snapshot",
    "restore": "backupctl.cli.restore:restore",
    "snapshots": "backupctl.cli.snapshots:snapshots",
    "local": "backupctl.cli.local:local",
    "demo": "backupctl.cli.demo:demo",
    "pipeline": "backupctl.cli.pipeline:pipeline",
    "drill": "backupctl.cli.drill:drill",
    "runbook": "backupctl.cli.runbook:runbook",
    "schedule": "backupctl.cli.schedule:schedule",
    "runs": "backupctl.cli.schedule:runs",
    "agent": "backupctl.cli.agent:agent",
    "emr": "backupctl.cli.emr:emr",
    "status": "backupctl.cli.status:status",
    "iam-policy": "backupctl.cli.iam:iam_policy",
}


class LazyGroup(click.Group):
    """A group whose subcommands (``LAZY_COMMANDS``) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attr)
            assert command.name == cmd_name, (command.name, cmd_name)
            self.add_command(command)
        return self.commands.get(cmd_name)

    def load_all(self) -> None:
        """Import every subcommand now (for a process that forks runs of the CLI: each child starts ready)."""
        for name in LAZY_COMMANDS:
            self.get_command(None, name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="backupctl")
@click.option(
    "--endpoint-url",
    envvar="BACKUPCTL_ENDPOINT_URL",
    help="AWS-compatible endpoint for every client (env BACKUPCTL_ENDPOINT_URL; AWS_ENDPOINT_URL is honoured).",
)
@click.option("--profile", envvar="AWS_PROFILE", help="AWS profile to use (env AWS_PROFILE).")
@click.option("--debug", is_flag=True, envvar="BACKUPCTL_DEBUG", help="Show tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars or informational messages; results (summaries, tables, --json) and errors "
                   "still print.")
@click.pass_context
def cli(ctx: click.Context, endpoint_url: str | None, profile: str | None, debug: bool, quiet: bool) -> None:
    """backupctl: cross-region backup and restore for DynamoDB, RDS MySQL and Redshift.

    Snapshots go to an S3 repository in the target region; every snapshot has a
    manifest with per-part checksums and a content digest, so a restore can be
    proven equal to its source.

    \b
    Quick start on the embedded endpoint (no AWS account needed):
      backupctl demo
      backupctl local up --port 4566     # then: export BACKUPCTL_ENDPOINT_URL=http://127.0.0.1:4566
    """
    ctx.obj = make_app(endpoint_url, profile, debug, quiet)


# AWS error codes that mean the request was wrong (exit 2) or named something that is not there (exit 3),
# where a command let them through unmapped; anything else unknown stays an internal error (exit 1).
AWS_BAD_INPUT = frozenset({
    "ValidationException", "ValidationError", "InvalidParameterValue", "InvalidParameterValueException",
    "InvalidParameterException", "InvalidParameterCombination", "InvalidRequestException", "InvalidArgument",
    "InvalidRequest", "MalformedPolicyDocument", "InvalidBucketName",
})
AWS_NOT_FOUND = frozenset({
    "ResourceNotFoundException", "ResourceNotFound", "NotFoundException", "NoSuchBucket", "NoSuchKey",
    "DBInstanceNotFound", "DBInstanceNotFoundFault", "ClusterNotFound", "ClusterNotFoundFault", "NoSuchEntity",
})


def _translate(e: BaseException) -> BackupctlError | None:
    """Map well-known library exceptions to one-line user errors."""
    if isinstance(e, botocore.exceptions.NoCredentialsError):
        err = BackupctlError("no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile)")
        err.exit_code = EXIT_AUTH
        return err
    if isinstance(e, botocore.exceptions.EndpointConnectionError):
        err = BackupctlError(f"cannot reach {e.kwargs.get('endpoint_url', 'the AWS endpoint')}: is it running?")
        err.exit_code = EXIT_DATA_PATH
        return err
    if isinstance(e, botocore.exceptions.ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        msg = e.response.get("Error", {}).get("Message", "")
        err = BackupctlError(f"AWS error {code}: {msg}")
        if code in ("AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch"):
            err.exit_code = EXIT_AUTH
        elif code in AWS_BAD_INPUT:
            err.exit_code = EXIT_USAGE
        elif code in AWS_NOT_FOUND:
            err.exit_code = EXIT_NOT_FOUND
        elif is_retryable(e):
            err.exit_code = EXIT_DATA_PATH
        return err
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("BACKUPCTL_DEBUG"))
    console = Console()
    try:
        rv = cli.main(args=args, prog_name="backupctl", standalone_mode=False)
    except click.exceptions.Abort:
        console.error("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except _NO_ARGS_IS_HELP as e:  # `backupctl` or `backupctl snapshots` alone: the help
        e.show()
        sys.exit(e.exit_code)
    except click.ClickException as e:
        # A usage error is one line like every other error, naming where the help is.
        message = " ".join(e.format_message().split())
        if isinstance(e, click.UsageError) and e.ctx is not None:
            message += f" (see '{e.ctx.command_path} --help')"
        console.error(message)
        sys.exit(e.exit_code)
    except BackupctlError as e:
        if debug:
            traceback.print_exc()
        console.error(e.message)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - the last line of defence
        translated = _translate(e)
        if debug or translated is None:
            traceback.print_exc()
        if translated is not None:
            console.error(translated.message)
            sys.exit(translated.exit_code)
        console.error(f"internal error: {type(e).__name__}: {e} (rerun with --debug and report it)")
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)


GC_THRESHOLDS = (50_000, 20, 100)  # Python's default (700, 10, 10)


def entry() -> None:
    """The ``backupctl`` program: ``main``, then a process exit without the interpreter's teardown.

    Tearing the interpreter down (a garbage collection and a dealloc of every module's objects:
    boto3's service models, pyarrow, numpy) took 0.4-0.6 s after a 1M-row restore on a 2-core VM,
    every one of them, for nothing the OS does not do on exit. Once ``main`` is done, the atexit
    handlers (logging, multiprocessing, weakref finalizers such as temporary directories) run and the
    standard streams are flushed, then the process exits. Only when no other non-daemon thread is
    left: such a thread gets Python's normal shutdown, which joins it. Daemon threads are never joined
    (Python's shutdown stops them too); the one a run of worker processes leaves, multiprocessing's
    ``QueueFeederThread``, is flushed by multiprocessing's own atexit handler. Tests call ``main``.

    The cyclic garbage collector runs less often (``GC_THRESHOLDS``, inherited by forked workers):
    the drivers' row tuples set off a young collection every 700 allocations, ~5% of a 1M-row
    snapshot's samples; a CLI process lives seconds, its few cycles wait (docs/adr/0019).

    backupctl does no linear algebra: numpy's OpenBLAS is told to use one thread (unless the
    environment says otherwise) before anything imports numpy, so that it does not start a thread pool
    at import (``import numpy`` on this 2-core VM: 0.125-0.15 s -> 0.056 s while other work loaded it,
    0.057-0.080 s -> 0.055-0.075 s idle).
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.set_threshold(*GC_THRESHOLDS)
    code: int | str | None = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(code, str):
        print(code, file=sys.stderr)  # what sys.exit("...") prints
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to say, the exit status stands
        status = status or 1
    os._exit(status)

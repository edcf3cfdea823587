"""The one place that owns output.

Human output (messages, tables, progress bars) goes to stderr through rich;
``--json`` data goes to stdout as exactly one JSON document and nothing else
is ever printed there. Commands receive a ``Console`` through click's context
and library functions receive a ``Progress``-like callback, never ``print``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import rich.console
import rich.errors
import rich.progress
import rich.table
import rich.text


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def plain_text(message: str) -> str:
    """A console message without its rich markup (for logs written to files or the repository)."""
    try:
        return rich.text.Text.from_markup(message).plain
    except rich.errors.MarkupError:
        return message


class ProgressHandle:
    """Thread-safe counter of items and bytes behind one progress bar."""

    def __init__(self, progress: rich.progress.Progress | None, task_id: Any, total: float | None):
        self._progress = progress
        self._task = task_id
        self._lock = threading.Lock()
        self.items = 0
        self.bytes = 0
        self.total = total
        self.started = time.monotonic()

    def advance(self, items: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.items += items
            self.bytes += nbytes
            if self._progress is not None:
                elapsed = max(time.monotonic() - self.started, 1e-6)
                self._progress.update(
                    self._task,
                    completed=self.items,
                    bytes=human_bytes(self.bytes),
                    rate=f"{self.items / elapsed:,.0f}",
                )

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


class Console:
    """Owns stderr (human) and stdout (JSON) for one CLI invocation."""

    def __init__(self, json_mode: bool = False, quiet: bool = False, width: int | None = None) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.err = rich.console.Console(stderr=True, width=width, highlight=False, soft_wrap=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)  # one line, as an error

    def error(self, message: str) -> None:
        # markup=False: an error message may contain brackets from user input. soft_wrap: an error is one
        # line however long (a fix command, an ARN); the terminal wraps it, rich does not break it.
        self.err.print("error: " + message, markup=False, style="red", soft_wrap=True)

    def ask(self, question: str) -> None:
        """Show a question a person answers on stdin (a runbook's confirmation): stderr, no newline, even when quiet."""
        self.err.print(question, end="", markup=False, soft_wrap=True)

    def emit_json(self, doc: Any) -> None:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
        sys.stdout.flush()

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        t = rich.table.Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*[str(x) for x in r])
        self.err.print(t)

    def kv(self, title: str, pairs: Sequence[tuple[str, Any]]) -> None:
        t = rich.table.Table(title=title, show_header=False, box=None, pad_edge=False)
        t.add_column(style="bold")
        t.add_column()
        for k, v in pairs:
            t.add_row(k, str(v))
        self.err.print(t)

    @contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[ProgressHandle]:
        """A progress bar with items, bytes and items/s; hidden when quiet."""
        if self.quiet:
            yield ProgressHandle(None, None, total)
            return
        prog = rich.progress.Progress(
            rich.progress.TextColumn("[bold]{task.description}"),
            rich.progress.BarColumn(),
            rich.progress.MofNCompleteColumn(),
            rich.progress.TextColumn("items  {task.fields[bytes]}  {task.fields[rate]} items/s"),
            rich.progress.TimeElapsedColumn(),
            console=self.err,
            transient=False,
        )
        with prog:
            task_id = prog.add_task(description, total=total, bytes="0 B", rate="0")
            yield ProgressHandle(prog, task_id, total)

"""The one home of retries, backoff and rate limiting.

* ``RetryPolicy`` - bounded exponential backoff with full jitter and an overall
  deadline (built on tenacity). Every loop that waits on a server - retries of
  throttled or failed calls, re-sending unprocessed batch items, polling a
  table or a cluster - goes through it, so every wait sleeps and every wait ends.
* ``is_retryable`` - which errors are transient (throttling, 5xx, dropped
  connections) and which are permanent (validation, access, not found).
* ``Heartbeat`` - a daemon thread renewing a lease every TTL/3 until stopped.
* ``TokenBucket`` - a thread-safe capacity budget (RCU/WCU per second) shared
  by every worker of a run.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.exceptions
import tenacity

from backupctl.errors import DataPathError

T = TypeVar("T")

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "InternalError",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionInProgressException",
        "LimitExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)


# MySQL errors worth another try: lost connection (2006 server gone away,
# 2013 lost during query), lock wait timeout (1205), deadlock victim (1213).
MYSQL_RETRYABLE_CODES = frozenset({2006, 2013, 1205, 1213})


def _is_retryable_mysql(exc: BaseException) -> bool:
    try:
        import pymysql
    except ImportError:  # pragma: no cover - pymysql is a dependency
        return False
    if not isinstance(exc, (pymysql.err.OperationalError, pymysql.err.InternalError)):
        return False
    return bool(exc.args) and exc.args[0] in MYSQL_RETRYABLE_CODES


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is transient: worth another try after a pause."""
    if _is_retryable_mysql(exc):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        return code in RETRYABLE_CODES or int(status) >= 500 or int(status) == 429
    return isinstance(
        exc,
        (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.IncompleteReadError,
            botocore.exceptions.ResponseStreamingError,
            ConnectionError,
            TimeoutError,
        ),
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and a deadline."""

    max_attempts: int = 12
    initial_s: float = 0.05
    max_backoff_s: float = 20.0
    deadline_s: float = 600.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_s": self.initial_s,
            "max_backoff_s": self.max_backoff_s,
            "deadline_s": self.deadline_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RetryPolicy:
        """The policy a task spec carries (the default when it carries none)."""
        if not d:
            return policy_from_env()
        return cls(
            max_attempts=int(d["max_attempts"]),
            initial_s=float(d["initial_s"]),
            max_backoff_s=float(d["max_backoff_s"]),
            deadline_s=float(d["deadline_s"]),
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (attempt counts from 1)."""
        cap = min(self.max_backoff_s, self.initial_s * (2 ** (attempt - 1)))
        return random.uniform(0, cap) if cap > 0 else 0.0

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` until it succeeds, retrying transient errors.

        Raises DataPathError naming ``what`` when attempts or the deadline run
        out; permanent errors propagate unchanged at once.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            stop=tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_after_delay(self.deadline_s),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_s, max=self.max_backoff_s),
            reraise=True,
        )
        try:
            return retrying(fn)
        except BaseException as e:
            if is_retryable(e):
                raise DataPathError(f"{what}: still failing after retries: {_describe(e)}") from e
            raise

    def poll(
        self,
        check: Callable[[], T | None],
        what: str,
        interval_s: float = 0.5,
        max_interval_s: float = 10.0,
    ) -> T:
        """Call ``check`` until it returns a value; sleep between calls; end at the deadline."""
        deadline = time.monotonic() + self.deadline_s
        sleep = interval_s
        while True:
            result = self.call(check, what)
            if result is not None:
                return result
            if time.monotonic() + sleep > deadline:
                raise DataPathError(f"{what}: not done after {self.deadline_s:.0f}s")
            time.sleep(sleep)
            sleep = min(max_interval_s, sleep * 1.5)



class Heartbeat:
    """Call ``fn`` every ``interval_s`` seconds on a daemon thread until ``stop`` (lease renewals).

    A failing call (its own retries exhausted) is skipped, not fatal: the next beat tries again,
    and a lease not renewed in time simply expires.
    """

    def __init__(self, interval_s: float, fn: Callable[[], Any], what: str) -> None:
        self.interval_s, self.fn, self.what = interval_s, fn, what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"backupctl {what}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.fn()
            except Exception:  # noqa: BLE001 - best effort; the lease expires if this keeps failing
                pass

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, self.interval_s))

def _describe(e: BaseException) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        err = e.response.get("Error", {})
        return f"{err.get('Code')}: {err.get('Message')}"
    return f"{type(e).__name__}: {e}"


DEFAULT_POLICY = RetryPolicy()


def policy_from_env() -> RetryPolicy:
    """The default policy, with BACKUPCTL_RETRY_MAX_ATTEMPTS / BACKUPCTL_RETRY_DEADLINE_S applied."""
    attempts = os.environ.get("BACKUPCTL_RETRY_MAX_ATTEMPTS")
    deadline = os.environ.get("BACKUPCTL_RETRY_DEADLINE_S")
    if not attempts and not deadline:
        return DEFAULT_POLICY
    return RetryPolicy(
        max_attempts=int(attempts) if attempts else DEFAULT_POLICY.max_attempts,
        deadline_s=float(deadline) if deadline else DEFAULT_POLICY.deadline_s,
        max_backoff_s=min(DEFAULT_POLICY.max_backoff_s, float(deadline) / 4) if deadline else DEFAULT_POLICY.max_backoff_s,
    )


class TokenBucket:
    """A thread-safe budget of ``rate`` units per second, burst ``burst``.

    ``acquire(n)`` blocks until ``n`` units are available. Consumption may run
    the balance negative (a Scan page's cost is known only after it returns);
    the next acquire then waits until the debt is repaid, so the long-run rate
    never exceeds ``rate``. ``rate=None`` means unlimited.
    """

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else (rate or 0.0)
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        assert self.rate is not None
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self, n: float = 1.0) -> None:
        """Wait until ``n`` units may be spent, then spend them."""
        if self.rate is None:
            return
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= min(n, self.burst):
                    self._tokens -= n
                    return
                wait = (min(n, self.burst) - self._tokens) / self.rate
            time.sleep(min(max(wait, 0.001), 1.0))

    def consume(self, n: float) -> None:
        """Record ``n`` units already spent (may go into debt)."""
        if self.rate is None:
            return
        with self._lock:
            self._refill()
            self._tokens -= n

    def wait_for_credit(self) -> None:
        """Block while the bucket is in debt."""
        self.acquire(0.0)



"""Retry policy and token bucket: transient errors retried, permanent ones not, budgets held."""

from __future__ import annotations

import threading
import time

import botocore.exceptions
import pytest

from backupctl.errors import DataPathError
from backupctl.retry import RetryPolicy, TokenBucket, is_retryable

FAST = RetryPolicy(max_attempts=4, initial_s=0.001, max_backoff_s=0.01, deadline_s=5)


def client_error(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (client_error("ProvisionedThroughputExceededException"), True),
        (client_error("ThrottlingException"), True),
        (client_error("SlowDown", 503), True),
        (client_error("Anything", 500), True),
        (client_error("ValidationException"), False),
        (client_error("AccessDeniedException", 403), False),
        (client_error("ResourceNotFoundException"), False),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
        (ValueError("x"), False),
    ],
)
def test_is_retryable(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_transient_errors_are_retried_until_success() -> None:
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise client_error("ThrottlingException")
        return "ok"

    assert FAST.call(fn, "x") == "ok"
    assert len(calls) == 3


def test_exhausted_retries_raise_data_path_error_naming_the_work() -> None:
    def fn() -> None:
        raise client_error("InternalError", 500)

    with pytest.raises(DataPathError, match="writing part-7: still failing after retries: InternalError"):
        FAST.call(fn, "writing part-7")


def test_permanent_errors_are_not_retried() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        raise client_error("ValidationException")

    with pytest.raises(botocore.exceptions.ClientError):
        FAST.call(fn, "x")
    assert len(calls) == 1


def test_poll_sleeps_and_has_a_deadline() -> None:
    p = RetryPolicy(max_attempts=2, initial_s=0.001, max_backoff_s=0.01, deadline_s=0.3)
    started = time.monotonic()
    with pytest.raises(DataPathError, match="not done after"):
        p.poll(lambda: None, "waiting", interval_s=0.05)
    assert 0.2 < time.monotonic() - started < 2


def test_backoff_is_bounded() -> None:
    p = RetryPolicy(initial_s=0.1, max_backoff_s=2)
    assert all(0 <= p.backoff(a) <= 2 for a in range(1, 40))


def test_token_bucket_holds_the_rate_across_threads() -> None:
    bucket = TokenBucket(rate=200, burst=20)
    spent = []

    def worker() -> None:
        for _ in range(25):
            bucket.acquire(1)
            spent.append(1)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    # 100 units at 200/s with a burst of 20: at least (100-20)/200 = 0.4 s.
    assert len(spent) == 100
    assert elapsed >= 0.38


def test_token_bucket_debt_delays_the_next_acquire() -> None:
    bucket = TokenBucket(rate=100, burst=10)
    bucket.consume(40)  # a scan page cost more than the balance
    started = time.monotonic()
    bucket.wait_for_credit()
    assert time.monotonic() - started >= 0.25  # 30 units of debt at 100/s


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(rate=None)
    started = time.monotonic()
    for _ in range(10000):
        bucket.acquire(100)
    assert time.monotonic() - started < 0.5

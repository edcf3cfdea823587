"""spark-submit entry point: run the tasks of a backupctl job spec, one Spark partition each.

    spark-submit spark_jobs/run_tasks.py --job JOB --results RESULTS [--region REGION]

JOB and RESULTS are local paths or ``s3://BUCKET/KEY`` (read and written with
boto3: region from --region or AWS_DEFAULT_REGION, endpoint from
BACKUPCTL_ENDPOINT_URL). A job spec is what ``backupctl.engines.spark.build_job``
writes: the TaskSpecs and the registered task function of each
(``backupctl.engines.registry``). The outcomes (each task's result, or its
error as class + message + exit code) go to RESULTS; the caller commits. The
exit code is 0 when every task succeeded, else the first failed task's, with
its message as one ``error:`` line on stderr. A failure of the job itself (a
malformed spec, Spark not starting) goes to RESULTS too, as ``error``.

Everything here is glue: the executors run the same task functions as the
local engine, and need backupctl and its dependencies importable (installed in
the executors' Python, or shipped with --py-files / --archives).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _s3(uri: str, region: str | None) -> tuple[Any, str, str]:
    from backupctl.aws import AwsContext, endpoint_from_env

    bucket, _, key = uri[len("s3://"):].partition("/")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return AwsContext(endpoint_url=endpoint_from_env()).client("s3", region), bucket, key


def read_text(location: str, region: str | None) -> str:
    if location.startswith("s3://"):
        client, bucket, key = _s3(location, region)
        return str(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8"))
    with open(location, encoding="utf-8") as f:
        return f.read()


def write_bytes(location: str, data: bytes, region: str | None) -> None:
    if location.startswith("s3://"):
        client, bucket, key = _s3(location, region)
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
        return
    with open(location, "wb") as f:
        f.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_tasks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", required=True, help="job spec: a path or s3://BUCKET/KEY")
    parser.add_argument("--results", required=True, help="where to write the outcomes: a path or s3://BUCKET/KEY")
    parser.add_argument("--region", help="region of the s3:// locations (default AWS_DEFAULT_REGION)")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    from backupctl.engines import spark as engine

    try:
        job = json.loads(read_text(args.job, args.region))
        engine.job_items(job)  # refuse a malformed job before starting Spark
        spark = SparkSession.builder.appName("backupctl-run-tasks").getOrCreate()
        try:
            spark.sparkContext.setLogLevel("ERROR")
            outcomes = engine.run_job(spark.sparkContext, job)
        finally:
            spark.stop()
    except Exception as e:  # noqa: BLE001 - a job-level failure is reported like a task's, in RESULTS
        # (on a cluster the step's stderr passes through the JVM and can lose its last lines; RESULTS cannot)
        error = engine.describe_error(e)
        write_bytes(args.results, json.dumps({"format": engine.JOB_FORMAT, "outcomes": [], "error": error}).encode(),
                    args.region)
        print(f"error: {error['message']}", file=sys.stderr, flush=True)
        return int(error["exit_code"]) or 1
    write_bytes(args.results, engine.outcomes_json(outcomes), args.region)
    for o in outcomes:
        if not o.get("ok"):
            err = engine.rebuild_error(o["error"])
            print(f"error: {err.message}", file=sys.stderr)
            return int(err.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Thin Spark entry points over backupctl's task functions (``spark-submit spark_jobs/run_tasks.py``)."""

"""The report service: an HTTP API over the report store (FastAPI), for admin UIs, remediation
tools and dashboards. It reads the store alone; refreshes go to Dagster's run queue."""

"""The report service: an HTTP API over the report store (FastAPI), for admin UIs, remediation
tools and dashboards, and the admin pages (``pages/``). It reads the store alone; refreshes and
remediation runs go to Dagster's run queue."""

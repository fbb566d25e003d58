"""The demo: a Jira-like multi-tenant source (``source``), the space-scoped catalogue its tools
share (``spaces``), and ``run`` that seeds the source and computes every report."""

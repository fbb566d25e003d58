"""The framework without Dagster: plans, the three phases, the ledger and cache tier, the report
store and reader, the refresh policy, settings and databases. Nothing here imports Dagster, so
reading a report costs only these imports."""

"""The framework on Dagster: the asset factory, checks, sensors, executors, IO managers, the
resource, the one ``Definitions`` (``definitions.defs``) and runs launched from the command line."""

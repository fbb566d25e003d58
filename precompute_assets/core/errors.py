"""The errors the framework raises for its users to act on, each with a message that names the
problem (a tool, a scope, a URL with its password masked) and what to do.

``USER_ERRORS`` are the ones a command prints as one line; a tool's own errors
(``ScopeNotFoundError``, ``MalformedReportError``) live in the contract.
"""

from __future__ import annotations


class DatabaseUnavailableError(RuntimeError):
    """A database could not be reached; the message names its URL without the password."""


class SettingsError(ValueError):
    """A setting holds a value the framework cannot use; the variable or field is named."""


class SchemaVersionError(RuntimeError):
    """The store's schema is not this release's; the message says to run ``precompute migrate``."""


class UnknownToolError(LookupError):
    """No tool of that name is registered."""


class ToolContractError(TypeError):
    """A tool does not fulfil the contract; the message names the tool and the fault."""


class UnknownScopeError(LookupError):
    """The source holds no such scope."""


class NoReportError(LookupError):
    """The scope exists but no report has been computed for it yet."""


class ScanError(RuntimeError):
    """A tool's scan raised; the message names the tool, scope and batch."""


class StaleGenerationError(RuntimeError):
    """A job tried to commit over a report from a newer job generation."""


class RunFailedError(RuntimeError):
    """A run of a report job failed; the message names the run, the tool and the scope."""


class DagsterUnavailableError(RuntimeError):
    """The Dagster webserver or daemon that on-demand refreshes go through is not running; the
    message says what to start."""


class UnknownKeyError(LookupError):
    """No API key has that id."""


USER_ERRORS: tuple[type[Exception], ...] = (
    DatabaseUnavailableError,
    SettingsError,
    SchemaVersionError,
    UnknownToolError,
    ToolContractError,
    UnknownScopeError,
    NoReportError,
    RunFailedError,
    DagsterUnavailableError,
    UnknownKeyError,
    FileNotFoundError,
)

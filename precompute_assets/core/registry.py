"""Tool discovery: the modules of ``tool_plugins`` and the entry-point group ``precompute.tools``.

Built-in tools are listed in the same entry-point group as third-party ones; the scan of
``tool_plugins`` also finds tools of a checkout that is not installed. Every tool is checked
against the contract when it loads, so a wrong tool fails with its name, not at its first run.
Set ``PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD=1`` to skip the entry points.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from precompute_assets.contract import ReportTool

ENTRY_POINT_GROUP = "precompute.tools"
DISABLE_AUTOLOAD_ENV = "PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PACKAGE = "tool_plugins"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ToolContractError(TypeError):
    """A tool does not fulfil the contract; the message names the tool and the fault."""


class UnknownToolError(LookupError):
    """No tool of that name is registered."""


def load_tools(*, autoload: bool | None = None) -> dict[str, ReportTool[Any]]:
    """Every tool, by name: the built-in package, then (unless disabled) the entry points."""
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes")
    found: list[tuple[str, Any]] = list(_builtin_tools())
    if autoload:
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            found.append((f"entry point {entry_point.name!r}", entry_point.load()))
    return register(found)


def register(candidates: Iterable[tuple[str, Any]]) -> dict[str, ReportTool[Any]]:
    """Validate tool classes or instances (with where each came from) into a registry."""
    tools: dict[str, ReportTool[Any]] = {}
    for origin, candidate in candidates:
        tool = validate_tool(candidate, origin)
        known = tools.get(tool.name)
        if known is not None and type(known) is not type(tool):
            raise ToolContractError(
                f"two tools are named {tool.name!r}: {_qualname(known)} and {_qualname(tool)}"
                f" (from {origin})"
            )
        tools.setdefault(tool.name, tool)
    return dict(sorted(tools.items()))


def get_tool(tools: Mapping[str, ReportTool[Any]], name: str) -> ReportTool[Any]:
    try:
        return tools[name]
    except KeyError:
        known = ", ".join(tools) or "none"
        raise UnknownToolError(f"unknown tool {name!r}; known tools: {known}") from None


def validate_tool(candidate: Any, origin: str = "") -> ReportTool[Any]:
    """An instance of the tool, or ToolContractError saying what is wrong with it."""
    label = f"{getattr(candidate, '__name__', candidate)!s}" + (f" ({origin})" if origin else "")
    cls = candidate if inspect.isclass(candidate) else type(candidate)
    if not issubclass(cls, ReportTool):
        raise ToolContractError(f"tool {label} is not a subclass of precompute_assets.ReportTool")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise ToolContractError(f"tool {label} does not implement {', '.join(missing)}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolContractError(
            f"tool {label} needs a class attribute name in snake_case, got {name!r}"
        )
    if not isinstance(getattr(cls, "entity_type", None), str):
        raise ToolContractError(f"tool {name!r} needs a class attribute entity_type (a string)")
    for method in ReportTool.__abstractmethods__:
        expected = _arity(getattr(ReportTool, method))
        actual = _arity(getattr(cls, method))
        if actual != expected:
            raise ToolContractError(
                f"tool {name!r}: {method} takes {actual} arguments, the contract passes {expected}"
            )
    return candidate if not inspect.isclass(candidate) else cls()


def _builtin_tools() -> Iterable[tuple[str, type]]:
    package = importlib.import_module(BUILTIN_PACKAGE)
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{BUILTIN_PACKAGE}.{module_info.name}")
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, ReportTool)
                and value.__module__ == module.__name__
                and not inspect.isabstract(value)
            ):
                yield f"module {module.__name__}", value


def _arity(function: Any) -> int:
    parameters = inspect.signature(function).parameters.values()
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _qualname(tool: ReportTool[Any]) -> str:
    return f"{type(tool).__module__}.{type(tool).__qualname__}"

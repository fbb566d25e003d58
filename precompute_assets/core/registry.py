"""Tool discovery: the entry-point group ``precompute.tools`` and the modules of ``tool_plugins``.

Built-in tools are listed in the same entry-point group as third-party ones; the scan of
``tool_plugins`` also finds the tools of a checkout that is not installed, and of files dropped
there. Every tool is checked when it loads: its shape against the contract, then the laws that
need no source (``empty()`` is JSON and the identity of ``merge``). A tool that fails to load or
to pass is left out with the reason, and the others keep working; ``precompute tools`` lists
them all. ``PRECOMPUTE_DISABLED_TOOLS`` (names, comma-separated) leaves tools out by name, and
``PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD=1`` skips the entry points.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from precompute_assets.contract import Remediation, ReportTool, ScopeCatalogue
from precompute_assets.core.errors import ToolContractError, UnknownToolError
from precompute_assets.core.settings import ToolSettings
from precompute_assets.core.text import shorten

ENTRY_POINT_GROUP = "precompute.tools"
BUILTIN_PACKAGE = "tool_plugins"
BUILTIN_DISTRIBUTION = "precompute-assets"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

LOADED, DISABLED, FAILED = "loaded", "disabled", "failed"


@dataclass(frozen=True)
class ToolEntry:
    """One tool found: where from, and whether it loaded (``tool``) or why not (``problem``)."""

    name: str  # the tool's name, or what its origin calls it when it could not be loaded
    origin: str
    status: str  # loaded, disabled or failed
    problem: str = ""
    tool: ReportTool[Any] | None = None


@dataclass(frozen=True)
class Registry:
    """Every tool found, loaded or not, in name order."""

    entries: tuple[ToolEntry, ...]

    @property
    def tools(self) -> dict[str, ReportTool[Any]]:
        return {entry.name: entry.tool for entry in self.entries if entry.tool is not None}

    @property
    def problems(self) -> list[ToolEntry]:
        return [entry for entry in self.entries if entry.status == FAILED]

    TITLES = ("tool", "status", "origin", "problem")

    def rows(self) -> list[list[str]]:
        """One row per tool, under ``TITLES``: what ``precompute tools`` prints."""
        return [[e.name, e.status, e.origin, e.problem or "-"] for e in self.entries]


def discover(*, autoload: bool | None = None, environ: Mapping[str, str] | None = None) -> Registry:
    """Every tool of the built-in package and (unless disabled) the entry points, checked."""
    settings = ToolSettings.from_env(environ)
    if autoload is None:
        autoload = not settings.disable_plugin_autoload
    disabled = settings.disabled
    found = [*(_entry_point_tools() if autoload else ()), *_builtin_tools()]
    entries: dict[str, ToolEntry] = {}
    classes: dict[str, type] = {}
    for origin, label, load in found:
        entry = _checked(origin, label, load, disabled)
        known = entries.get(entry.name)
        if known is None:
            entries[entry.name] = entry
            if entry.tool is not None:
                classes[entry.name] = type(entry.tool)
        elif entry.tool is not None and classes.get(entry.name) not in (None, type(entry.tool)):
            entries[entry.name] = ToolEntry(
                entry.name,
                f"{known.origin}; {origin}",
                FAILED,
                f"two tools are named {entry.name!r}: {_qualname(known.tool)} ({known.origin}) "
                f"and {_qualname(entry.tool)} ({origin}); neither is loaded",
            )
    return Registry(tuple(sorted(entries.values(), key=lambda entry: entry.name)))


def given(tools: Mapping[str, ReportTool[Any]]) -> Registry:
    """A registry of tools handed over in code (tests, a deployment's own selection)."""
    return Registry(
        tuple(ToolEntry(name, "given in code", LOADED, tool=tool) for name, tool in tools.items())
    )


def load_tools(*, autoload: bool | None = None) -> dict[str, ReportTool[Any]]:
    """The tools that loaded and passed their checks, by name."""
    return discover(autoload=autoload).tools


def register(candidates: Iterable[tuple[str, Any]]) -> dict[str, ReportTool[Any]]:
    """Validate tool classes or instances (with where each came from) into a registry, raising
    ``ToolContractError`` for the first that does not fulfil the contract."""
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
        raise UnknownToolError(f"unknown tool {shorten(name)!r}; known tools: {known}") from None


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
    catalogue = getattr(cls, "catalogue", None)
    if not isinstance(catalogue, ScopeCatalogue):
        raise ToolContractError(
            f"tool {name!r} needs a class attribute catalogue, a precompute_assets.ScopeCatalogue"
        )
    remediation = getattr(cls, "remediation", None)
    if remediation is not None:
        _check_remediation(name, remediation)
    for base, implementation in ((ReportTool, cls), (ScopeCatalogue, type(catalogue))):
        for method in base.__abstractmethods__:
            expected = _arity(getattr(base, method))
            actual = _arity(getattr(implementation, method))
            if actual != expected:
                raise ToolContractError(
                    f"tool {name!r}: {method} takes {actual} arguments, the contract passes "
                    f"{expected}"
                )
    return candidate if not inspect.isclass(candidate) else cls()


def _check_remediation(name: str, remediation: Any) -> None:
    """A tool's remediation: an instance with the contract's methods, its label, batch size."""
    if not isinstance(remediation, Remediation):
        raise ToolContractError(
            f"tool {name!r}: remediation must be a precompute_assets.Remediation instance, got "
            f"{type(remediation).__name__}"
        )
    action = getattr(remediation, "action", None)
    if not isinstance(action, str) or not action.strip():
        raise ToolContractError(f"tool {name!r}: its remediation needs an action (a label)")
    size = getattr(remediation, "batch_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ToolContractError(
            f"tool {name!r}: its remediation's batch_size must be a positive integer, got {size!r}"
        )
    for method in Remediation.__abstractmethods__:
        expected = _arity(getattr(Remediation, method))
        actual = _arity(getattr(type(remediation), method))
        if actual != expected:
            raise ToolContractError(
                f"tool {name!r}: remediation {method} takes {actual} arguments, the contract "
                f"passes {expected}"
            )


def quick_check(tool: ReportTool[Any]) -> None:
    """The laws that need no source: ``empty()`` is a JSON value, and merge's identity."""
    name = tool.name
    try:
        encoded = json.dumps(tool.empty(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ToolContractError(f"tool {name!r}: empty() is not a JSON value: {error}") from None
    if json.loads(encoded) != tool.empty():
        raise ToolContractError(f"tool {name!r}: empty() does not come back from JSON unchanged")
    for label, merged in (
        ("merge([empty()])", tool.merge([tool.empty()])),
        ("merge([empty(), empty()])", tool.merge([tool.empty(), tool.empty()])),
    ):
        if merged != tool.empty():
            raise ToolContractError(f"tool {name!r}: {label} is {merged!r}, not empty()")


def _checked(origin: str, label: str, load: Any, disabled: set[str]) -> ToolEntry:
    """The entry of one candidate tool; whatever a plug-in raises, it fails alone."""
    try:
        candidate = load()
    except Exception as error:
        return ToolEntry(label, origin, FAILED, _problem(error))
    name = getattr(candidate, "name", None)
    shown = name if isinstance(name, str) and _NAME.match(name) else label
    if shown in disabled:
        variable = ToolSettings.variables()["disabled_tools"]
        return ToolEntry(shown, origin, DISABLED, f"listed in {variable}")
    try:
        tool = validate_tool(candidate, origin)
        quick_check(tool)
    except Exception as error:
        return ToolEntry(shown, origin, FAILED, _problem(error))
    return ToolEntry(tool.name, origin, LOADED, tool=tool)


def _problem(error: Exception) -> str:
    return f"{type(error).__name__}: {shorten(str(error), 300)}"


def _entry_point_tools() -> Iterator[tuple[str, str, Any]]:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        yield _entry_point_origin(entry_point), entry_point.name, entry_point.load


def _entry_point_origin(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    package = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
    kind = "built-in" if dist is not None and dist.name == BUILTIN_DISTRIBUTION else "package"
    return f"{kind}: {package}, entry point {entry_point.name} = {entry_point.value}"


def _builtin_tools() -> Iterator[tuple[str, str, Any]]:
    package = importlib.import_module(BUILTIN_PACKAGE)
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name.startswith("_"):
            continue
        module_name = f"{BUILTIN_PACKAGE}.{module_info.name}"
        origin = f"built-in: module {module_name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # a broken file fails alone
            yield origin, module_info.name, _raiser(error)
            continue
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, ReportTool)
                and value.__module__ == module.__name__
                and not inspect.isabstract(value)
            ):
                yield origin, value.__name__, _returner(value)


def _raiser(error: Exception) -> Any:
    def load() -> Any:
        raise error

    return load


def _returner(value: Any) -> Any:
    return lambda: value


def _arity(function: Any) -> int:
    parameters = inspect.signature(function).parameters.values()
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _qualname(tool: ReportTool[Any] | None) -> str:
    return f"{type(tool).__module__}.{type(tool).__qualname__}"

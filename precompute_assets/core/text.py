"""Plain-text rendering shared by the command line's tables."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under a ruled header."""
    table = [list(titles), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(titles))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def shorten(text: str, limit: int = 80) -> str:
    """``text`` as an error message may show it: at most ``limit`` characters."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def markdown_table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, as the Dagster UI renders metadata."""
    lines = [titles, ["---"] * len(titles), *rows]
    return "\n".join(
        "| " + " | ".join(str(c).replace("|", "/") for c in line) + " |" for line in lines
    )


def human_age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def ago(seconds: float) -> str:
    """How long ago, as people say it: "just now", "1 minute ago", "3 hours ago"."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"

"""Markdown for Dagster metadata and reports: tables and bullet lists the UI renders."""

from __future__ import annotations


def markdown_table(rows: list[dict]) -> str:
    """A table with the first row's keys as its header; "(none)" for no rows."""
    if not rows:
        return "(none)"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]).replace("|", "\\|") for k in head) + " |" for r in rows]
    return "\n".join(lines)


def bullets(items: list[str], limit: int = 10) -> str:
    """The first `limit` items as a bullet list."""
    return "\n".join(f"- {p}" for p in items[:limit])

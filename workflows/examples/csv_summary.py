"""
The csv_summary node: reads the run's first CSV attachment and writes
result.json (row and column counts) and chart.png (the mean of each numeric
column, as bars) into the workspace, then registers the chart explicitly.
The workspace hook picks up result.json on its own.

Runs under `python -m workflows.node`, which provides `_context`,
`attachment_store` and `set_output`. Standard library only.
"""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

WIDTH, HEIGHT, MARGIN = 480, 270, 20
BACKGROUND, AXIS = (255, 255, 255), (60, 60, 60)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def first_csv(attachments: list[dict]) -> dict:
    for attachment in attachments:
        if attachment["mime"] == "text/csv" or attachment["name"].lower().endswith(".csv"):
            return attachment
    raise SystemExit("No CSV attachment was given to this run.")


def read_table(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as source:
        rows = [row for row in csv.reader(source) if row]
    if not rows:
        return [], []
    return rows[0], rows[1:]


def numeric_means(header: list[str], rows: list[list[str]]) -> dict[str, float]:
    means = {}
    for index, name in enumerate(header):
        values = []
        for row in rows:
            try:
                values.append(float(row[index]))
            except (IndexError, ValueError):
                break
        else:
            if values:
                means[name] = sum(values) / len(values)
    return means


def png(pixels: list[bytearray]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def bar_chart(values: list[float]) -> bytes:
    pixels = [bytearray(BACKGROUND * WIDTH) for _ in range(HEIGHT)]

    def fill(x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        for y in range(max(y0, 0), min(y1, HEIGHT)):
            pixels[y][3 * x0 : 3 * x1] = bytes(colour) * (x1 - x0)

    base = HEIGHT - MARGIN
    fill(MARGIN, base, WIDTH - MARGIN, base + 2, AXIS)
    fill(MARGIN, MARGIN, MARGIN + 2, base, AXIS)
    top = max((abs(v) for v in values), default=0) or 1
    slot = (WIDTH - 3 * MARGIN) // max(len(values), 1)
    for index, value in enumerate(values):
        height = int((base - 2 * MARGIN) * abs(value) / top)
        x0 = 2 * MARGIN + index * slot
        fill(x0, base - height, x0 + max(slot * 2 // 3, 1), base, PALETTE[index % len(PALETTE)])
    return png(pixels)


def main(context: dict) -> dict:
    source = first_csv(context["attachments"])
    header, rows = read_table(source["path"])
    means = numeric_means(header, rows)
    workspace = Path(context["python_workspace_root"])
    result = {
        "file": source["name"],
        "attachment_id": source["attachment_id"],
        "rows": len(rows),
        "columns": len(header),
        "column_names": header,
        "numeric_means": means,
        "task_prompt": context["task_prompt"],
    }
    (workspace / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (workspace / "chart.png").write_bytes(bar_chart(list(means.values())))
    print(f"{source['name']}: {len(rows)} rows, {len(header)} columns")
    return result


if __name__ == "__main__":
    # _context, attachment_store and set_output are provided by workflows.node.
    summary = main(_context)  # noqa: F821
    chart = attachment_store.register_file("chart.png", name="chart.png")  # noqa: F821
    print(f"registered {chart.attachment_id}")
    outcome = {"rows": summary["rows"], "columns": summary["columns"], "chart": chart.attachment_id}
    set_output(outcome)  # noqa: F821

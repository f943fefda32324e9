"""The paper's published main table as data (analysis/data/peft_arena_2026.yaml), as frontier points.

Gain and forgetting are in percentage points against the table's own base row for the same model and
domain: gain = target - target(base), forgetting = general(base) - general.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TABLE = Path(__file__).resolve().parent / "data" / "peft_arena_2026.yaml"


def load_table(path: Path = TABLE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def points(model: str, domain: str, regime: str = "sft", path: Path = TABLE) -> tuple[dict, list[dict]]:
    """(base row, points) for one column of the table: e.g. ("qwen2.5-7b", "math", "sft")."""
    table = load_table(path)
    column = f"{model}/{domain}"
    if column not in table["columns"]:
        raise ValueError(f"published: {column!r} is not in the table; allowed: {', '.join(table['columns'])}")
    index = table["columns"].index(column)

    def cell(row: dict) -> tuple[float, float]:
        target, general = row["cells"][index].split("/")
        return float(target), float(general)

    base_row = next(r for r in table["rows"] if r["regime"] == "base")
    base_target, base_general = cell(base_row)
    out = []
    for row in table["rows"]:
        if row["regime"] != regime:
            continue
        target, general = cell(row)
        params = row["params_m"].get(model)
        out.append({"label": f"{row['method']}-{row['setting']}".rstrip("-").replace("--", "-"),
                    "method": row["method"], "setting": row["setting"], "regime": regime,
                    "params": params * 1e6 if params else None, "target": target, "retention": general,
                    "gain": target - base_target, "forgetting": base_general - general})
    return {"target": base_target, "retention": base_general}, out

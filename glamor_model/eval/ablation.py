"""The paper's Table 2: four input settings x context attention none / CA / GLA.

Each cell is a full `train` + `evaluate` run in OUT/<setting>-<attention>/; finished
cells are skipped when the grid is run again, so an interrupted grid resumes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from glamor_model.engine.config import TrainConfig
from glamor_model.engine.loop import train
from ncaer.atomic import write_csv, write_text

from .evaluate import evaluate_run

# (row label, short name, context face, {attention: model})
GRID = [
    ("(i) face only", "face", "masked", {"none": "face-only"}),
    ("(ii) context only, face masked", "context-masked", "masked",
     {"none": "context-none", "ca": "context-ca", "gla": "context-gla"}),
    ("(iii) context only, face visible", "context-visible", "visible",
     {"none": "context-none", "ca": "context-ca", "gla": "context-gla"}),
    ("(iv) face + masked context", "face-context", "masked",
     {"none": "face-context-none", "ca": "face-context-ca", "gla": "glamor"}),
]
ATTENTION_NAMES = {"none": "no attention", "ca": "CA", "gla": "GLA"}


def run_ablation(base: TrainConfig, out: str | Path, split: str = "test",
                 on_cell: Callable[[str, str, dict], None] | None = None,
                 train_hooks: dict | None = None) -> pd.DataFrame:
    out = Path(out)
    rows = []
    for label, short, context_face, models in GRID:
        for attention, model in models.items():
            cell = out / f"{short}-{attention}"
            results_file = cell / f"eval-{split}" / "results.json"
            if not results_file.is_file():
                config = replace(base, model=model, context_face=context_face, out=str(cell))
                train(config, resume=(cell / "last.pt").exists(), **(train_hooks or {}))
                evaluate_run(cell, split=split, cache_dir=base.cache_dir, workers=base.workers)
            results = json.loads(results_file.read_text())
            rows.append({"setting": label, "attention": attention, "model": model,
                         "accuracy": results["accuracy"], "macro_f1": results["macro_f1"]})
            if on_cell:
                on_cell(label, attention, results)
    table = pd.DataFrame(rows)
    write_csv(table, out / "ablation.csv")
    write_text(paper_table(table), out / "ablation.md")
    return table


def paper_table(table: pd.DataFrame) -> str:
    """Markdown in the form of the paper's Table 2: accuracy (%) per setting and attention."""
    lines = ["| input | no attention | CA | GLA |", "|---|---|---|---|"]
    for setting, group in table.groupby("setting", sort=False):
        acc = {r.attention: f"{100 * r.accuracy:.2f}" for r in group.itertuples()}
        lines.append(f"| {setting} | {acc.get('none', '-')} | {acc.get('ca', '-')} | {acc.get('gla', '-')} |")
    return "\n".join(lines) + "\n"

"""The end-of-sweep table a person reads: one row per distinct configuration, nothing cut off on an
80-column terminal, the base model's scores said once."""
from __future__ import annotations

import io

from rich.console import Console

from orchestrator import config
from orchestrator.cli import console

BASE = {"target": {"score": 0.096}, "retention": {"score": 0.396}}


def _result(trial_id: str, method: str, setting: dict, trainable: int, gain: float, **extra) -> dict:
    return {"trial_id": trial_id, "trial_dir": f"/runs/quick/trials/{trial_id}", "method": method,
            "status": "completed", "setting": setting, "params": {"trainable": trainable}, "base": BASE,
            "final": {"target": 0.096 + gain, "retention": 0.35, "gain": gain, "forgetting": 0.046,
                      "gain_ci": [gain - 0.030, gain + 0.032], "forgetting_ci": [0.036, 0.058]},
            "timings": {"train_s": 41.0}, **extra}


RESULTS = [
    _result("ef2ec045", "oft", {"block_size": 24, "block_share": False, "cayley_neumann": True}, 1_572_480, 0.193),
    _result("469567c1", "lora", {"r": 7, "lora_alpha": 14, "dropout": 0.0}, 2_136_960, 0.175),
    _result("bdab13e3", "pissa", {"r": 2, "lora_alpha": 4, "dropout": 0.0}, 610_560, 0.108),
    _result("a0a0a0a0", "lora", {"r": 7, "lora_alpha": 14, "dropout": 0.0}, 2_136_960, 0.175, duplicate_of="469567c1"),
]


def test_table_fits_80_columns_with_one_row_per_configuration():
    cfg = config.load("quick")
    screen = Console(width=80, record=True, file=io.StringIO())
    screen.print(console.results_table(cfg, RESULTS, front=["ef2ec045", "469567c1"], width=80))
    text = screen.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text and "block_size=24" in text and "block_share" not in text
    assert sum("469567c1" in line for line in lines) == 1 and "a0a0a0a0" not in text  # the repeat is not a row
    assert "2.14M" in text and "base model: target 0.096, retention 0.396" in text
    assert "+0.193 ± 0.031" in text and "+0.046 ± 0.011" in text  # estimates with their 95% half-widths
    assert "0.289" not in text  # the finetuned target, 0.096 + 0.193: the caption's arithmetic at 80 columns
    wide = Console(width=130, record=True, file=io.StringIO())
    wide.print(console.results_table(cfg, RESULTS, width=130))
    wide_text = wide.export_text()
    assert "0.289" in wide_text and "+0.193 ± 0.031" in wide_text
    rows = [line.strip() for line in lines if line.strip().startswith(("ef2ec045", "469567c1", "bdab13e3"))]
    assert len(rows) == 3 and rows[0].startswith("ef2ec045*") and rows[2].startswith("bdab13e3 ")


def test_a_sweep_of_both_regimes_says_which_each_row_trained_with():
    cfg = config.load("quick-rl")
    mixed = [_result("11111111", "lora", {"r": 2, "lora_alpha": 4, "dropout": 0.0}, 610_560, 0.14,
                     config={"train": {"regime": "sft"}}),
             _result("22222222", "lora", {"r": 2, "lora_alpha": 4, "dropout": 0.0}, 610_560, -0.01,
                     config={"train": {"regime": "grpo"}})]
    screen = Console(width=100, record=True, file=io.StringIO())
    screen.print(console.results_table(cfg, mixed))
    rows = {line.split()[0]: line for line in screen.export_text().splitlines() if line.strip()[:1] in "12"}
    assert "lora sft" in rows["11111111"] and "lora grpo" in rows["22222222"]
    screen = Console(width=100, record=True, file=io.StringIO())
    screen.print(console.results_table(config.load("quick"), RESULTS))
    assert " sft" not in screen.export_text()  # one regime: not repeated on every row


def _progress_lines(monkeypatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(console.console, "print", lambda text, **kw: lines.append(text))
    return lines


def test_progress_counts_trials_not_events_a_retry_starting_again(monkeypatch):
    from types import SimpleNamespace

    from orchestrator.cli.progress import SweepProgress

    lines = _progress_lines(monkeypatch)
    progress = SweepProgress(total=2)
    first, second = (SimpleNamespace(trial_id=t, config={"method": "lora"}, last_result={}) for t in ("t1", "t2"))
    progress.on_trial_start(0, [], first)
    progress.on_trial_start(0, [], second)
    progress.on_trial_recover(0, [], second)  # a worker died: Tune retries the trial
    progress.on_trial_start(0, [], second)
    progress.on_trial_error(0, [], second)
    progress.on_trial_complete(0, [], first)
    assert lines[-2].startswith("[0 done, 1 running, 1 failed / 2] failed t2")
    assert lines[-1].startswith("[1 done, 0 running, 1 failed / 2] finished t1")


def test_a_resumed_sweep_counts_the_trials_finished_before_it(monkeypatch):
    from types import SimpleNamespace

    from orchestrator.cli.progress import SweepProgress

    lines = _progress_lines(monkeypatch)
    progress = SweepProgress(total=3, finished=["t1", "t2"])
    progress.on_trial_start(0, [], SimpleNamespace(trial_id="t3", config={"method": "oft"}, last_result={}))
    progress.on_trial_complete(0, [], SimpleNamespace(trial_id="t3", config={}, last_result={}))
    assert lines[-1].startswith("[3 done, 0 running, 0 failed / 3]")

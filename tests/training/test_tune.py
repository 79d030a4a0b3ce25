"""Tuning writes HParams logs that TensorBoard reads, and a results table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata

from training.__main__ import main


def hparams_plugin_data(folder: Path) -> list[bytes]:
    accumulator = event_accumulator.EventAccumulator(str(folder))
    accumulator.Reload()
    return list(accumulator.PluginTagToContent(metadata.PLUGIN_NAME).values())


def test_two_trial_grid_logs_hparams_and_ranks_trials(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = tmp_path / "hparams"
    argv = ["tune", "--data", str(tiny_mnist), "--log-dir", str(log_dir)]
    argv += ["--units", "8", "--dropout", "0.1", "--optimizer", "adam", "sgd"]
    assert main(argv) == 0

    assert hparams_plugin_data(log_dir), "no hparams_config (experiment) summary"
    trials = sorted(p for p in log_dir.iterdir() if p.is_dir())
    assert [t.name for t in trials] == ["trial-000", "trial-001"]
    for trial in trials:
        content = hparams_plugin_data(trial)
        assert content, f"{trial.name} has no hparams session summary"
        session = metadata.parse_session_start_info_plugin_data(content[0])
        assert set(session.hparams) == {"num_units", "dropout", "optimizer"}

    with (log_dir / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {row["optimizer"] for row in rows} == {"adam", "sgd"}
    assert float(rows[0]["val_accuracy"]) >= float(rows[1]["val_accuracy"])
    assert (log_dir / "results.json").is_file()
    assert f"best trial {rows[0]['trial']}" in capsys.readouterr().out

"""Nothing lost: the run-folder lock, collision-free default names, safe --resume, strict JSON and a
tampered config.json refused (both frameworks)."""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from jax_vae.common import cli as cli_module
from jax_vae.common.config.presets import get_preset
from jax_vae.common.runs import folder as runs
from jax_vae.common.runs.lock import LOCK_FILE, RunLock
from tests.helpers import FRAMEWORKS, TINY, assert_one_line_error, run_main, tree_snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(framework: str, out: Path, capsys, *extra: str) -> tuple[int | str | None, list[str]]:
    return run_main(framework, ["train", "--steps", "4", *TINY, "--out", str(out), *extra], capsys)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, one_torch_thread):  # noqa: F811 (a fixture: threads pinned first)
    root = tmp_path_factory.mktemp("finished")
    out = {}
    for framework in FRAMEWORKS:
        out[framework] = root / framework
        args = ["train", "--steps", "4", "--checkpoint-every", "2", *TINY, "--out", str(out[framework])]
        assert cli_module.main(args, framework=framework) == 0
    return out


# ------------------------------------------------------------------------------------------- lock
@pytest.mark.parametrize("holder", FRAMEWORKS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_second_trainer_into_a_locked_folder_writes_nothing(tmp_path, capsys, holder, framework):
    """A live trainer (here: a lock held by this process, as a running trainer holds it) blocks any
    other, of either framework, with one line naming the holder."""
    run = tmp_path / "run"
    with RunLock(run, holder):
        before = tree_snapshot(run)
        code, lines = _train(framework, run, capsys)
        assert_one_line_error(
            code, lines, f"is in use by {holder} process {os.getpid()}", socket.gethostname()
        )
        assert tree_snapshot(run) == before  # just the holder's run.lock
    assert not (run / LOCK_FILE).exists()  # released: the file is gone


def _dead_pid() -> int:
    proc = multiprocessing.get_context("spawn").Process(target=int)
    proc.start()
    proc.join()
    return int(proc.pid or 0)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys, framework):
    run = tmp_path / "run"
    run.mkdir()
    stale = {"host": socket.gethostname(), "pid": _dead_pid(), "framework": "jax", "started": "then"}
    (run / LOCK_FILE).write_text(json.dumps(stale))
    code, lines = _train(framework, run, capsys)
    assert code == 0, lines
    notes = [line for line in lines if "stale lock" in line]
    assert len(notes) == 1 and f"process {stale['pid']}" in notes[0] and "it is gone" in notes[0]
    assert not (run / LOCK_FILE).exists() and (run / runs.SUMMARY_FILE).is_file()


def test_a_lock_of_a_live_process_without_flock_still_blocks(tmp_path):
    """Where flock is not honoured (a lock file left by a live PID on this host), the PID decides."""
    run = tmp_path / "run"
    run.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "framework": "torch", "started": "now"}
    (run / LOCK_FILE).write_text(json.dumps(holder))
    with pytest.raises(Exception, match=f"in use by torch process {os.getppid()}"):
        RunLock(run, "jax").acquire()


def test_default_run_names_differ_by_seed_and_never_reuse_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = cli_module.default_run_dir(get_preset("wiseodd"), "jax")
    b = cli_module.default_run_dir(dataclasses.replace(get_preset("wiseodd"), seed=1), "jax")
    assert a != b and "-s0-" in a.name and "-s1-" in b.name and str(os.getpid()) in a.name
    a.mkdir(parents=True)
    again = cli_module.default_run_dir(get_preset("wiseodd"), "jax")
    assert again != a and not again.exists()


# ----------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys, finished_runs, framework):
    run = tmp_path / "run"
    shutil.copytree(finished_runs[framework], run)
    before = tree_snapshot(run)
    code, lines = run_main(framework, ["train", "--resume", "--out", str(run)], capsys)
    assert code == 0, lines
    assert any("is finished (4 steps); nothing to do" in line for line in lines), lines
    assert tree_snapshot(run) == before
    summary = json.loads((run / runs.SUMMARY_FILE).read_text())
    assert summary["train_loss"] is not None and math.isfinite(summary["train_loss"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_without_a_run_or_a_checkpoint_is_refused(tmp_path, capsys, finished_runs, framework):
    code, lines = run_main(framework, ["train", "--resume", "--out", str(tmp_path / "typo")], capsys)
    assert_one_line_error(code, lines, "no run to resume in", "typo")
    assert not (tmp_path / "typo").exists()
    run = tmp_path / "run"
    shutil.copytree(finished_runs[framework], run)
    shutil.rmtree(run / runs.CHECKPOINT_DIR)
    (run / runs.CHECKPOINT_DIR).mkdir()
    before = tree_snapshot(run)
    code, lines = run_main(framework, ["train", "--resume", "--steps", "8", "--out", str(run)], capsys)
    assert_one_line_error(code, lines, "has no intact checkpoint", "to resume from")
    assert tree_snapshot(run) == before  # the metrics history is kept


TAMPERED = {
    "a string where an int belongs": (lambda r: r["config"].update(latent_dim="2"), "latent_dim expects"),
    "a float where an int belongs": (lambda r: r["config"].update(batch_size=8.5), "batch_size expects"),
    "a bool where an int belongs": (lambda r: r["config"].update(seed=True), "seed expects"),
    "an unknown enum value": (lambda r: r["config"].update(likelihood="poisson"), "likelihood='poisson'"),
    "an unknown framework": (lambda r: r.update(framework="tensorflow"), "framework 'tensorflow'"),
    "options of the wrong type": (lambda r: r["options"].update(log_every="10"), "log_every expects int"),
    "options not an object": (lambda r: r.update(options=[1]), "'options' is not a JSON object"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_config_json_is_refused_on_resume(tmp_path, capsys, finished_runs, case):
    run = tmp_path / "run"
    shutil.copytree(finished_runs["jax"], run)
    record = json.loads((run / runs.CONFIG_FILE).read_text())
    change, needle = TAMPERED[case]
    change(record)
    (run / runs.CONFIG_FILE).write_text(json.dumps(record))
    before = tree_snapshot(run)
    code, lines = run_main("jax", ["train", "--resume", "--steps", "8", "--out", str(run)], capsys)
    assert_one_line_error(code, lines, needle)
    assert tree_snapshot(run) == before


# ------------------------------------------------------------------------------------ strict JSON
def test_json_files_are_strict_with_null_and_a_flag():
    text = runs.strict_json({"a": float("nan"), "b": 1.5, "c": float("inf"), "d": {"e": float("-inf")}})
    assert json.loads(text) == {"a": None, "b": 1.5, "c": None, "d": {"e": None}, "non_finite": ["a", "c"]}
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_run_records_its_data_folder_and_every_json_file_is_strict(
    tmp_path, capsys, finished_runs, framework
):
    run = finished_runs[framework]
    record = json.loads((run / runs.CONFIG_FILE).read_text())
    assert record["data_dir"] is None  # rectangles are generated, not read
    for path in [run / runs.CONFIG_FILE, run / runs.SUMMARY_FILE, run / runs.METRICS_FILE]:
        for line in [path.read_text()] if path.suffix == ".json" else path.read_text().splitlines():
            json.loads(line, parse_constant=lambda name: pytest.fail(f"{path}: {name} in strict JSON"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_step_picks_a_checkpoint(tmp_path, capsys, finished_runs, framework):
    run = tmp_path / "run"
    shutil.copytree(finished_runs[framework], run)
    before = tree_snapshot(run)
    args = ["train", "--resume", "--resume-step", "3", "--steps", "6", "--out", str(run)]
    code, lines = run_main(framework, args, capsys)
    assert_one_line_error(code, lines, "3", "2", "4")  # the step asked for and the intact ones
    assert tree_snapshot(run) == before
    args[3] = "2"
    code, lines = run_main(framework, args, capsys)
    assert code == 0, lines
    assert any("resuming at step 2" in line for line in lines), lines
    summary = runs.read_summary(run)
    assert summary is not None and summary["steps"] == 6 and summary["resumed_from"] == 2


def test_torch_epoch_evaluation_of_diverged_weights_is_nan_not_a_traceback(tmp_path):
    import torch

    from jax_vae.common import backends
    from jax_vae.common.config.options import TrainOptions
    from tests.helpers import tiny_config, tiny_data

    backend = backends.get("torch")
    trainer: Any = backend.trainer(tiny_config(), tiny_data(), TrainOptions(), tmp_path / "ckpt", None)
    trainer.init_state()
    with torch.no_grad():
        next(trainer.state.model.parameters()).fill_(float("nan"))
    result = trainer.evaluate()
    assert set(result) == {"test_loss", "test_recon", "test_kl"} and all(
        math.isnan(v) for v in result.values()
    )

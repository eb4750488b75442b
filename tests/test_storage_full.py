"""Disk full / read-only storage: one line naming the path, the device and the free space, exit 2;
the best-copy leaves no `.best.tmp` behind (ENOSPC injected through a monkeypatched write)."""

from __future__ import annotations

import errno
import shutil
from types import SimpleNamespace

import pytest

from orchestrator.search.folder import SearchFolder


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_with_path_device_and_free_space(tmp_path, monkeypatch, capsys,
                                                                              code, words):
    from orchestrator.cli.app import main

    target = tmp_path / "s" / "ledger" / "trials.parquet"

    def full(self):
        raise OSError(code, "injected", str(target))

    monkeypatch.setattr(SearchFolder, "read_meta", full)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "search.json").write_text("{}")
    (tmp_path / "s" / "config.yaml").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert words in err[0] and str(target) in err[0] and "device /" in err[0] and "MiB free" in err[0], err


def test_the_best_copy_leaves_no_temporary_when_the_disk_fills(tmp_path, monkeypatch):
    from orchestrator.search.rate_stage import _copy_best
    from orchestrator.storage.full import storage_message

    source = tmp_path / "trial" / "model"
    source.mkdir(parents=True)
    for name in ("model.safetensors", "model.json"):
        (source / name).write_bytes(b"x" * 1000)
    ctx = SimpleNamespace(folder=SearchFolder(tmp_path / "s"), store=None)
    ctx.folder.stage_dir(1).mkdir(parents=True)
    calls = []

    copyfile = shutil.copyfile

    def copy_then_full(src, dst, **kw):
        calls.append(src)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", dst)
        return copyfile(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", copy_then_full)
    with pytest.raises(OSError) as caught:
        _copy_best(ctx, 1, str(source))
    assert caught.value.errno == errno.ENOSPC and storage_message(caught.value) is not None
    assert not (ctx.folder.stage_dir(1) / ".best.tmp").exists() and not ctx.folder.best_dir(1).exists()


def test_a_storage_error_is_read_back_from_a_trials_error_line():
    from orchestrator.storage.full import storage_error_in

    exc = storage_error_in("OSError: [Errno 28] No space left on device: '/runs/s/stages/stage-1/trials'")
    assert exc.errno == errno.ENOSPC and exc.filename == "/runs/s/stages/stage-1/trials"
    assert storage_error_in("OSError: [Errno 30] Read-only file system").errno == errno.EROFS
    assert storage_error_in("OSError: [Errno 2] No such file or directory: 'x'") is None  # not storage
    assert storage_error_in("RuntimeError: injected fault") is None and storage_error_in(None) is None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_disk_full_inside_a_trial_stops_the_search_with_the_storage_line_and_resume_completes(tmp_path):
    """The trial raised because the disk was full: not a failed trial, nothing recorded for its stage."""
    from hardening_search import run, search_env, tiny_config

    from orchestrator.search import ledger

    cfg = tiny_config(tmp_path, "full", rates=(0.3,))
    search_dir = tmp_path / "runs" / "full"
    log = tmp_path / "log.txt"
    code = run(["search", str(cfg), "--storage", str(tmp_path / "runs")],
               search_env(tmp_path, S4OP_FAIL_TRIALS="1/seed-7:enospc"), log)
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("s4op: error:")]
    assert code == 2 and len(errors) == 1, text[-3000:]
    assert "no space left writing" in errors[0] and "stage-1/trials" in errors[0] and "MiB free" in errors[0]
    assert "Traceback" not in text.split("s4op: error:")[-1]
    assert [r.stage for r in ledger.stage_rows(search_dir)] == [0]  # stage 1 left incomplete
    assert [r for r in ledger.trial_rows(search_dir) if r.stage == 1] == []  # no trial written as failed
    assert not (search_dir / "search.lock").exists()

    assert run(["resume", str(search_dir)], search_env(tmp_path), log) == 0, log.read_text()[-3000:]
    trials = [r for r in ledger.trial_rows(search_dir) if r.stage == 1]
    assert sorted(r.status for r in trials) == ["completed", "completed"]
    assert [r.status for r in ledger.stage_rows(search_dir)] == ["completed", "completed"]

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

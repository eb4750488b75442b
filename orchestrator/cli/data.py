"""`s4op data`: generate a task's synthetic data in its official layout, and describe a data folder.

    s4op data generate <task> --out DIR [--size train=N,val=N,test=N | --train N --val N --test N]
                       [--seed S] [--option key=value ...] [--force]
    s4op data info <task> DIR [--max-len L] [--val-fraction F] [--seed S] [--json] [--loader M:F] [--metric M]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from search_spaces.errors import DataError

data_app = typer.Typer(help="Generate and inspect task data (ListOps, Pathfinder, IMDb, ECG).",
                       no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def parse_size(text: Optional[str], train: Optional[int], val: Optional[int], test: Optional[int]) -> dict | None:
    """{train, val, test} from `train=N,val=N,test=N` and/or the single-split flags."""
    size: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("train", "val", "test") or not value.isdigit():
            raise DataError(f"--size item {item.strip()!r} must be train=N, val=N or test=N with N a non-negative integer")
        size[key] = int(value)
    for key, value in (("train", train), ("val", val), ("test", test)):
        if value is not None:
            if value < 0:
                raise DataError(f"--{key} {value} must be a non-negative integer")
            size[key] = value
    return size or None


def parse_options(items: List[str]) -> dict:
    """`key=value` strings to a dict; values become int, float, bool or stay strings."""
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise DataError(f"--option {item!r} must be key=value")
        low = value.lower()
        if low in ("true", "false"):
            options[key] = low == "true"
            continue
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


@data_app.command("generate")
def generate(
    task: str = typer.Argument(..., help="listops, pathfinder, imdb or ecg"),
    out: Path = typer.Option(..., "--out", help="Folder to write (must be empty unless --force)."),
    size: Optional[str] = typer.Option(None, "--size", help="Split sizes, e.g. train=2000,val=400,test=400."),
    train: Optional[int] = typer.Option(None, "--train", help="Training examples."),
    val: Optional[int] = typer.Option(None, "--val", help="Validation examples."),
    test: Optional[int] = typer.Option(None, "--test", help="Test examples."),
    seed: int = typer.Option(0, "--seed", help="Generator seed (same seed, same files)."),
    option: List[str] = typer.Option([], "--option", help="Generator option key=value (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Write synthetic data for TASK in its official on-disk layout, then print its fingerprint."""
    from workers.data import fingerprint, generate_task
    from workers.data.fingerprint import data_files

    sizes = parse_size(size, train, val, test)
    path = generate_task(task, out, size=sizes, seed=seed, options=parse_options(option), overwrite=force)
    files = data_files(path)
    total = sum(f.stat().st_size for f in files)
    shown = ", ".join(f"{k}={v}" for k, v in (sizes or {}).items()) or "default sizes"
    typer.echo(f"wrote {task} data to {path} ({shown}, seed {seed}): {len(files)} files, {total / 1e6:.2f} MB")
    typer.echo(f"fingerprint: {fingerprint(path)}")


@data_app.command("info")
def info(
    task: str = typer.Argument(..., help="listops, pathfinder, imdb, ecg, parquet or python"),
    data_dir: Path = typer.Argument(..., help="The task's data folder."),
    max_len: Optional[int] = typer.Option(None, "--max-len", help="Pad/truncate to this length."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of train carved as val when no val file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation carve-out."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    loader: Optional[str] = typer.Option(None, "--loader", help="Task python: package.module:function."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Tasks parquet, python: accuracy | macro_f1."),
) -> None:
    """Print split sizes, lengths, label distribution and majority baseline of a data folder, and
    how many sequences --max-len truncates (lengths shown are those in the files)."""
    from workers.data import fingerprint, load_task
    from workers.data.tasks import summarize, truncation_notes

    splits = load_task(task, data_dir, max_len=max_len, val_fraction=val_fraction, seed=seed, loader=loader,
                       metric=metric)
    summary = summarize(splits)
    summary["data_dir"] = str(Path(data_dir).absolute())
    summary["fingerprint"] = fingerprint(data_dir)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{task} data in {summary['data_dir']} (L={summary['L']}, metric {summary['metric']})")
    typer.echo(f"fingerprint: {summary['fingerprint']}")
    what = "vocabulary" if summary["input_kind"] == "tokens" else "channels"
    labels = "labels (multi-label)" if summary["multilabel"] else "classes"
    typer.echo(f"input {summary['input_kind']}, {what} {summary['d_input']}, {summary['n_classes']} {labels}, "
               f"longest sequence {summary['longest']}")
    typer.echo(f"majority = {summary['majority_definition']}")
    for name, d in summary["splits"].items():
        line = f"  {name:<5} n={d['n']:<7}"
        if d["n"]:
            line += f" length min/mean/max {d['length_min']}/{d['length_mean']}/{d['length_max']}"
        line += f"  majority {summary['metric']} {d['majority_rate']:.3f}"
        if "class_counts" in d:
            line += f"  counts {d['class_counts']}"
        else:
            rates = " ".join(f"{k}={v:.3f}" for k, v in d["positive_rate"].items())
            line += f"  positive rate {rates}  no label {d['no_label_rate']:.3f}"
        typer.echo(line)
    for note in truncation_notes(splits):
        typer.echo(note)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

"""The training loop: metrics, batching, schedule, determinism, resuming, early stopping."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import support

from search_spaces.errors import CheckpointError, DataError
from workers.batches import eval_batches, n_train_batches, train_batches, train_order
from workers.metrics import accuracy, macro_f1, majority_baseline, metric_from_logits
from workers.models import ModelSpec, S4Model
from workers.training import TrainState, evaluate, fit, lr_factor


@dataclass
class Split:
    x: np.ndarray
    lengths: np.ndarray
    y: np.ndarray


@dataclass
class Info:
    name: str = "toy"
    multilabel: bool = False


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    info: Info


def toy_split(n: int, seed: int, L: int = 24, vocab: int = 6) -> Split:
    """Label 1 iff token 5 occurs among the real tokens; random lengths, 0-padded."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(L // 3, L + 1, size=n)  # (n,)
    x = rng.integers(1, vocab - 1, size=(n, L))  # (n L), tokens 1..4
    y = rng.integers(0, 2, size=n)  # (n,)
    for i in range(n):
        if y[i]:
            x[i, rng.integers(0, lengths[i])] = vocab - 1
        x[i, lengths[i]:] = 0
    return Split(x.astype(np.int64), lengths.astype(np.int64), y.astype(np.int64))


def toy_splits(n_train: int = 96, n_val: int = 48) -> Splits:
    return Splits(toy_split(n_train, 1), toy_split(n_val, 2), toy_split(n_val, 3), Info())


def tiny_model(seed: int = 0, dropout: float = 0.1):
    """`support.tiny_model` for the toy task (6 tokens, 2 classes), with dropout."""
    return support.tiny_model(seed, d_input=6, d_output=2, dropout=dropout)


FIT = dict(epochs=4, lr=0.01, weight_decay=0.01, batch_size=16, patience=None, grad_clip=1.0, warmup_epochs=1, seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------- metrics
def test_accuracy_and_macro_f1_count_what_they_should():
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    pred = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # label 0: tp 1, fp 1, fn 1 -> 0.5; label 1: tp 1, fp 0, fn 1 -> 2/3
    assert macro_f1(pred, y) == pytest.approx((0.5 + 2 / 3) / 2)
    # a label never present nor predicted is left out of the mean
    y3 = np.concatenate([y, np.zeros((4, 1))], axis=1)
    p3 = np.concatenate([pred, np.zeros((4, 1))], axis=1)
    assert macro_f1(p3, y3) == pytest.approx((0.5 + 2 / 3) / 2)


def test_metric_from_logits_thresholds_multilabel_at_half():
    logits = np.array([[2.0, -1.0], [-0.1, 0.3]])  # sigmoid > 0.5 iff logit > 0
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert metric_from_logits(logits, y, multilabel=True) == 1.0
    assert metric_from_logits(logits, np.array([0, 1]), multilabel=False) == 1.0
    assert majority_baseline(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1])) == 0.75
    assert majority_baseline(np.array([0, 0, 0, 1]), np.array([1, 1, 0, 1])) == 0.25  # train's class, scored on y


# ------------------------------------------------------------------------------------- batches
def test_train_batches_cover_every_row_once_and_are_seeded():
    split = toy_split(70, 0)
    order_a = train_order(split.lengths, 16, torch.Generator().manual_seed(5))
    order_b = train_order(split.lengths, 16, torch.Generator().manual_seed(5))
    order_c = train_order(split.lengths, 16, torch.Generator().manual_seed(6))
    rows = np.concatenate(order_a)
    assert sorted(rows.tolist()) == list(range(70))
    assert all((a == b).all() for a, b in zip(order_a, order_b))
    assert any(a.shape != c.shape or (a != c).any() for a, c in zip(order_a, order_c))
    assert len(order_a) == n_train_batches(split, 16)
    for batch in train_batches(split, 16, torch.Generator().manual_seed(5)):
        assert batch.x.shape[1] == int(batch.lengths.max())  # trimmed to the longest row
        assert torch.equal(batch.y, torch.from_numpy(split.y[batch.index]))


def test_eval_batches_visit_rows_by_length():
    split = toy_split(33, 0)
    seen = [b.index for b in eval_batches(split, 10)]
    rows = np.concatenate(seen)
    assert sorted(rows.tolist()) == list(range(33))
    assert (np.diff(split.lengths[rows]) >= 0).all()


# ------------------------------------------------------------------------------------- schedule
def test_lr_schedule_warms_up_linearly_then_decays_by_cosine():
    total, warm = 100, 10
    factors = [lr_factor(s, total, warm) for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.5)  # halfway through the decay
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] < 1e-3
    assert lr_factor(0, 10, 0) == 1.0


# ------------------------------------------------------------------------------------- fit
def test_fit_is_deterministic_for_a_fixed_seed():
    splits = toy_splits()
    runs = []
    for _ in range(2):
        model = tiny_model()
        result = fit(model, splits, **FIT)
        runs.append((result, model))
    (ra, ma), (rb, mb) = runs
    assert [h.train_loss for h in ra.history] == [h.train_loss for h in rb.history]
    assert [h.val_metric for h in ra.history] == [h.val_metric for h in rb.history]
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    other = fit(tiny_model(), splits, **{**FIT, "seed": 4})
    assert [h.train_loss for h in other.history] != [h.train_loss for h in ra.history]


def test_fit_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    model = tiny_model()
    torch.manual_seed(123)
    fit(model, toy_splits(), **{**FIT, "epochs": 1})
    assert torch.equal(torch.rand(3), expected)


def test_fit_learns_the_toy_task_above_majority():
    splits = toy_splits(n_train=160, n_val=64)
    model = tiny_model(dropout=0.0)
    result = fit(model, splits, **{**FIT, "epochs": 8, "lr": 0.02})
    majority = majority_baseline(splits.train.y, splits.val.y)
    assert result.best_val_metric >= majority + 0.2, (result.best_val_metric, majority)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert evaluate(model, splits.val, splits.info, batch_size=16) == result.best_val_metric


def test_resumed_fit_continues_exactly_like_an_uninterrupted_run(tmp_path):
    splits = toy_splits()
    full_model = tiny_model()
    full = fit(full_model, splits, **FIT)

    saved = {}

    def save_at_2(report):
        if report.epoch == 2:
            report.state.save(tmp_path / "state")
            saved["val"] = report.val_metric

    # interrupted run: the same run killed after epoch 2 (its state saved by the callback)
    part_model = tiny_model()

    class Interrupt(Exception):
        pass

    def save_and_stop(report):
        save_at_2(report)
        if report.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(part_model, splits, **FIT, on_epoch=save_and_stop)

    resumed_model = tiny_model(seed=99)  # different init: the state carries the weights
    state = TrainState.load(tmp_path / "state")
    assert state.epoch == 2 and saved["val"] == full.history[1].val_metric
    resumed = fit(resumed_model, splits, **FIT, state=state)
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in full.history]
    assert [h.val_metric for h in resumed.history] == [h.val_metric for h in full.history]
    assert resumed.best_epoch == full.best_epoch and resumed.epochs_run == full.epochs_run
    for (ka, va), (kb, vb) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_early_stopping_restores_the_best_weights():
    splits = toy_splits()
    rng = np.random.default_rng(0)
    noisy_val = Split(splits.val.x, splits.val.lengths, rng.integers(0, 2, size=splits.val.y.shape[0]))
    splits = Splits(splits.train, noisy_val, splits.test, splits.info)
    model = tiny_model()
    epochs_seen = []
    result = fit(model, splits, **{**FIT, "epochs": 12, "patience": 2, "lr": 0.03}, on_epoch=lambda r: epochs_seen.append(r.epoch))
    vals = [h.val_metric for h in result.history]
    assert result.best_val_metric == max(vals)
    assert result.best_epoch == vals.index(max(vals)) + 1
    assert epochs_seen == list(range(1, result.epochs_run + 1))
    assert result.stopped_early  # random val labels: no lasting improvement
    assert result.epochs_run == result.best_epoch + 2 < 12
    assert evaluate(model, splits.val, splits.info, batch_size=16) == result.best_val_metric
    assert all(h.eta_s >= 0 and math.isfinite(h.train_loss) for h in result.history)


def test_multilabel_fit_uses_bce_and_macro_f1():
    base = toy_splits()

    def two_labels(s: Split) -> Split:
        y = np.stack([s.y, 1 - s.y], axis=1).astype(np.float32)  # (n 2)
        return Split(s.x, s.lengths, y)

    splits = Splits(two_labels(base.train), two_labels(base.val), two_labels(base.test), Info(multilabel=True))
    model = tiny_model(dropout=0.0)
    result = fit(model, splits, **{**FIT, "epochs": 2})
    model.eval()
    logits = model(torch.from_numpy(splits.val.x), torch.from_numpy(splits.val.lengths)).detach().numpy()
    score = evaluate(model, splits.val, splits.info, batch_size=16)
    assert score == pytest.approx(macro_f1(logits > 0, splits.val.y), abs=1e-6)
    assert result.best_val_metric == score


def test_empty_validation_split_is_a_data_error():
    splits = toy_splits()
    empty = Split(splits.val.x[:0], splits.val.lengths[:0], splits.val.y[:0])
    with pytest.raises(DataError, match="validation split"):
        fit(tiny_model(), Splits(splits.train, empty, splits.test, splits.info), **FIT)


def test_altered_train_state_is_refused(tmp_path):
    splits = toy_splits()
    result = fit(tiny_model(), splits, **{**FIT, "epochs": 1})
    result.state.save(tmp_path)
    blob = (tmp_path / "train_state.safetensors").read_bytes()
    (tmp_path / "train_state.safetensors").write_bytes(blob[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="sha256"):
        TrainState.load(tmp_path)
    (tmp_path / "train_state.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        TrainState.load(tmp_path)


def test_train_state_of_another_architecture_is_a_checkpoint_error(tmp_path):
    splits = toy_splits()
    result = fit(tiny_model(), splits, **{**FIT, "epochs": 1})
    result.state.save(tmp_path)
    torch.manual_seed(0)
    wider = S4Model(ModelSpec(kind="s4d", d_input=6, d_output=2, input_kind="tokens", d_model=12, n_layers=2,
                              d_state=4, norm="batch"))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        fit(wider, splits, **FIT, state=TrainState.load(tmp_path))
    with pytest.raises(CheckpointError, match="seed"):
        fit(tiny_model(), splits, **{**FIT, "seed": 11}, state=TrainState.load(tmp_path))


def test_a_diverging_fit_raises_a_training_error_naming_the_loss():
    from search_spaces.errors import TrainingError

    model = tiny_model(dropout=0.0)
    with torch.no_grad():
        model.decoder.weight.fill_(float("nan"))  # every logit NaN -> NaN loss on the first step
    with pytest.raises(TrainingError, match=r"training diverged: loss=nan at epoch 1"):
        fit(model, toy_splits(), **FIT)

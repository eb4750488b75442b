"""ListOps (Long Range Arena): nested list operations over digits, 10 classes.

An expression is a tree: a leaf is a digit 0-9, a node applies MIN, MAX, MED (median, truncated
to int) or SM (sum mod 10) to 2..max_args children. The generator follows the LRA generator: a
node at depth < max_depth is an operator with probability 0.25, else a digit; an expression's
length counts its digits, operators and closing `]` (not the parentheses); only lengths strictly
between min_len and max_len are kept, duplicates dropped. Files are LRA's `basic_{train,val,test}
.tsv` with header `Source\tTarget`, sources in LRA's binary bracket serialisation, e.g.
`( ( ( [MAX 2 ) 9 ) ] )` for MAX(2, 9). The loader also reads LRA's `listops-1000/` folder and
the `{train,val,test}.tsv` names of the S4oP reference setup.

The tokenizer splits on whitespace and, like the S4 reference LRA pipeline, drops the parentheses
(they only restate the nesting that `[OP ... ]` already carries), so a sequence's length is the
LRA length above. The vocabulary keeps ids for `(` and `)` all the same (d_input 18).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from search_spaces.errors import DataError
from workers.data.tasks import (
    TaskSplits,
    check_options,
    int_option,
    longest_of,
    require_dir,
    resolve_len,
    split_sizes,
    split_val,
    task_info,
    token_split,
)

MIN, MAX, MED, SM, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SM)
VALUE_P = 0.25  # probability that a node above max_depth is an operator (LRA)

# 0 = padding; digits 1..10; operators 11..14; `]` 15; `(` 16, `)` 17.
VOCAB: dict[str, int] = {str(d): d + 1 for d in range(10)}
VOCAB.update({MIN: 11, MAX: 12, MED: 13, SM: 14, END: 15, "(": 16, ")": 17})
DROPPED = frozenset({"(", ")"})
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = {"train": 96000, "val": 2000, "test": 2000}
DEFAULTS = {"min_len": 500, "max_len": 2000, "max_depth": 10, "max_args": 10}


# --- expressions ----------------------------------------------------------------------------------


def apply(op: str, values: list[int]) -> int:
    """The value of operator `op` over `values` (LRA semantics)."""
    if op == MIN:
        return min(values)
    if op == MAX:
        return max(values)
    if op == MED:
        return int(np.median(values))
    if op == SM:
        return sum(values) % 10
    raise ValueError(op)


def value_of(tree) -> int:
    """The value of an expression tree (int leaf, or [op, child, ...])."""
    if isinstance(tree, int):
        return tree
    return apply(tree[0], [value_of(c) for c in tree[1:]])


def to_source(tree) -> str:
    """LRA serialisation: node (op, c0..ck-1) -> `( ( ( op c0 ) c1 ) ... ] )`, k+1 open parens."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree[0], tree[1:]
    parts = ["("] * (len(children) + 1) + [op, to_source(children[0]), ")"]
    for c in children[1:]:
        parts += [to_source(c), ")"]
    parts += [END, ")"]
    return " ".join(parts)


def evaluate_source(source: str) -> int:
    """Evaluate an LRA source string with a stack (independent of the tree it came from)."""
    stack: list[list] = []
    result = None
    for tok in source.split():
        if tok in DROPPED:
            continue
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            node = stack.pop()
            v = apply(node[0], node[1:])
            if stack:
                stack[-1].append(v)
            else:
                result = v
        else:
            d = int(tok)
            if stack:
                stack[-1].append(d)
            else:
                result = d
    if stack or result is None:
        raise ValueError(f"unbalanced ListOps expression: {source[:60]!r}")
    return int(result)


class _TooLong(Exception):
    pass


def _grow(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: list[int]):
    """One LRA tree from depth `depth`; `budget[0]` counts tokens left before it cannot be kept."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        return int(10 * rng.random())  # uniform digit 0-9
    budget[0] -= 2
    if budget[0] < 0:
        raise _TooLong
    n_args = 2 + int((max_args - 1) * rng.random())  # uniform in 2..max_args
    children = [_grow(rng, depth + 1, max_depth, max_args, budget) for _ in range(n_args)]
    op = OPERATORS[int(4 * rng.random())]
    return [op, *children]


def sample_expressions(n: int, *, seed: int, min_len: int, max_len: int, max_depth: int, max_args: int) -> list:
    """n distinct trees with min_len < length < max_len, in generation order (deterministic)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    trees = []
    attempts, limit = 0, 2000 * n + 100000
    while len(trees) < n:
        attempts += 1
        if attempts > limit:
            raise DataError(
                f"ListOps generator found only {len(trees)} of {n} distinct expressions with "
                f"{min_len} < length < {max_len} (max_depth={max_depth}, max_args={max_args}); widen the bounds"
            )
        budget = [max_len - 1]
        try:
            tree = _grow(rng, 1, max_depth, max_args, budget)
        except _TooLong:
            continue
        length = max_len - 1 - budget[0]
        if length <= min_len:
            continue
        src = to_source(tree)
        if src in seen:
            continue
        seen.add(src)
        trees.append(tree)
    return trees


# --- files ----------------------------------------------------------------------------------------


def generate(out: Path, *, size=None, seed: int = 0, options=None) -> None:
    """Write `basic_{train,val,test}.tsv` into folder `out` (LRA layout)."""
    opts = check_options("listops", options)
    min_len = int_option("listops", opts, "min_len", DEFAULTS["min_len"], lo=0)
    max_len = int_option("listops", opts, "max_len", DEFAULTS["max_len"], lo=2)
    max_depth = int_option("listops", opts, "max_depth", DEFAULTS["max_depth"], lo=1)
    max_args = int_option("listops", opts, "max_args", DEFAULTS["max_args"], lo=2)
    if max_len - min_len < 2:
        raise DataError(f"generate options min_len={min_len}, max_len={max_len} for listops leave no length strictly between")
    sizes = split_sizes("listops", size, DEFAULT_SIZE)
    total = sum(sizes.values())
    trees = sample_expressions(total, seed=seed, min_len=min_len, max_len=max_len, max_depth=max_depth, max_args=max_args)
    start = 0
    for split in SPLITS:
        rows = trees[start:start + sizes[split]]
        start += sizes[split]
        lines = ["Source\tTarget"] + [f"{to_source(t)}\t{value_of(t)}" for t in rows]
        (out / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def tokenize(source: str) -> np.ndarray:
    """Token ids `(l,)` of an LRA source string (parentheses dropped); KeyError on an unknown token."""
    return np.asarray([VOCAB[t] for t in source.split() if t not in DROPPED], dtype=np.int64)  # (l,)


def read_tsv(path: Path) -> tuple[list[list[int]], list[int]]:
    """Token id lists and targets of one `basic_*.tsv`; a malformed row is a DataError naming it."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"cannot read ListOps file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"ListOps file {path} is not UTF-8 text") from None
    lines = text.splitlines()
    if not lines or lines[0].strip().split("\t") != ["Source", "Target"]:
        raise DataError(f"ListOps file {path} row 1: expected header 'Source<TAB>Target'")
    seqs, targets = [], []
    for row, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"ListOps file {path} row {row}: expected 2 tab-separated fields, got {len(fields)}")
        source, target = fields
        target = target.strip()
        if len(target) != 1 or target not in "0123456789":
            raise DataError(f"ListOps file {path} row {row}: target {target[:20]!r} is not a digit 0-9")
        try:
            ids = tokenize(source)
        except KeyError as exc:
            raise DataError(f"ListOps file {path} row {row}: unknown token {str(exc.args[0])[:20]!r}") from None
        if not len(ids):
            raise DataError(f"ListOps file {path} row {row}: empty source")
        seqs.append(ids)
        targets.append(int(target))
    return seqs, targets


def find_root(data_dir: Path) -> tuple[Path, str]:
    """The folder holding the TSV files and their name prefix.

    `data_dir` itself or LRA's `listops-1000/` inside it, with LRA's `basic_{split}.tsv` names or
    the `{split}.tsv` names of the S4oP reference setup.
    """
    root = require_dir(Path(data_dir), "ListOps basic_train.tsv, basic_val.tsv, basic_test.tsv")
    for cand in (root, root / "listops-1000", root / "lra_release" / "listops-1000"):
        for prefix in ("basic_", ""):
            if (cand / f"{prefix}train.tsv").is_file():
                return cand, prefix
    raise DataError(f"ListOps file {root / 'basic_train.tsv'} not found")


def load(data_dir, *, max_len=None, val_fraction: float = 0.2, seed: int = 0) -> TaskSplits:
    """Load LRA ListOps from `data_dir`; val is `basic_val.tsv`, or carved from train if absent/empty.

    L is `max_len`, or (None) the longest sequence over the three files."""
    info = task_info("listops")
    root, prefix = find_root(Path(data_dir))
    if not (root / f"{prefix}test.tsv").is_file():
        raise DataError(f"ListOps file {root / f'{prefix}test.tsv'} not found")
    read = {name: read_tsv(root / f"{prefix}{name}.tsv") for name in SPLITS
            if name != "val" or (root / f"{prefix}val.tsv").is_file()}
    L = resolve_len(info, max_len, longest_of(*(seqs for seqs, _ in read.values())))
    split = {name: token_split(seqs, targets, L) for name, (seqs, targets) in read.items()}
    train, val = split["train"], split.get("val")
    if val is None or len(val) == 0:  # no (or an empty) validation file: carve it from train
        train, val = split_val(train, val_fraction, seed)
    return TaskSplits(train, val, split["test"], info)

"""Stale-lock takeover is atomic: of many drivers taking over a dead driver's lock, exactly one wins.

Each round forks N takers that start together (a barrier) on a lock whose owner PID is dead; each
winner stays alive until every taker of its round has tried, then exits without releasing, so the
next round starts again from a dead owner's lock.
"""

import json
import multiprocessing as mp
import os
import socket

from orchestrator.search.lock import acquire_lock, lock_path, read_lock
from search_spaces.errors import SearchStateError

TAKERS, ROUNDS = 8, 30


def _taker(search_dir, start, done, results):
    start.wait()
    try:
        acquire_lock(search_dir, log=lambda msg: None)
        won = True
    except SearchStateError:
        won = False
    results.put((os.getpid(), won))
    done.wait()  # a winner stays alive (its lock valid) until the whole round has tried
    os._exit(0)


def _dead_pid() -> int:
    child = mp.get_context("fork").Process(target=os._exit, args=(0,))
    child.start()
    child.join()
    return child.pid


def test_concurrent_takers_of_a_stale_lock_have_one_winner_every_round(tmp_path):
    ctx = mp.get_context("fork")
    lock_path(tmp_path).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                               "started_at": "2026-01-01T00:00:00Z"}))
    for round_ in range(ROUNDS):
        start, done, results = ctx.Barrier(TAKERS), ctx.Barrier(TAKERS), ctx.SimpleQueue()
        takers = [ctx.Process(target=_taker, args=(tmp_path, start, done, results)) for _ in range(TAKERS)]
        for p in takers:
            p.start()
        outcome = [results.get() for _ in takers]
        for p in takers:
            p.join(timeout=60)
        winners = [pid for pid, won in outcome if won]
        assert len(winners) == 1, f"round {round_}: {len(winners)} holders"
        assert read_lock(tmp_path)["pid"] == winners[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

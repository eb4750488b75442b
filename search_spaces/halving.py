"""Synchronous successive halving over the seeds of a stage (`search.scheduler.kind: halving`); pure.

Rungs sit at fine-tune epochs m_0 = grace, m_i = grace * reduction^i, below the last epoch E. Every seed
runs to m_0 and waits there; once every seed of the stage has its val metric at m_0 (or has ended), the
best floor(n / reduction) of the n that reached it (at least one) go on to m_1 and the others stop;
and so on, rung by rung. A seed past the last rung runs to E, so the stage always ends with at least
one seed that completed. Unlike asynchronous halving (ASHA), no seed runs on before the seeds it is
compared with have reported, so the first seeds of a stage are judged like the last ones.

`Halving` holds the state as plain data (trial ids, epochs, values) and answers each event with a
`Verdict`: what the reporting trial does ("continue", "wait" at its rung, "stop") and which waiting
trials stop or may run on. The Tune adapter (`orchestrator.search.tune_stage`) only translates.
A restored search loses the recorded values: a seed that reports past a rung has passed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def milestones(grace: int, reduction: float, epochs: int) -> list[int]:
    """The rung epochs grace * reduction^i below `epochs`, distinct and increasing."""
    out: list[int] = []
    m = float(grace)
    while int(m) < epochs:
        if not out or int(m) > out[-1]:
            out.append(int(m))
        m *= reduction
    return out


def kept_at_rung(reached: int, reduction: float) -> int:
    """How many of the `reached` seeds go on past a rung: floor(reached / reduction), at least 1."""
    return max(1, int(reached // reduction))


@dataclass(frozen=True)
class Verdict:
    action: str = "continue"  # for the reporting trial: continue | wait | stop
    stop: frozenset = frozenset()  # waiting trials that stop
    resume: frozenset = frozenset()  # waiting trials that may run on


@dataclass
class Halving:
    """The rung state of one stage; `expected` = the number of seeds (or samples) of the stage."""

    rungs: list[int]
    reduction: float
    expected: int
    values: dict = field(default_factory=dict)  # rung index -> {trial: val metric at that rung}
    level: dict = field(default_factory=dict)  # trial -> rungs passed
    ended: set = field(default_factory=set)  # trials that stopped, completed or failed
    judged: set = field(default_factory=set)  # rung indices already decided
    order: list = field(default_factory=list)  # trials in the order first seen (ties)

    def _see(self, trial: str) -> None:
        if trial not in self.level:
            self.level[trial] = 0
            self.order.append(trial)

    def add(self, trial: str) -> None:
        """A trial of the stage is known (before its first report)."""
        self._see(trial)

    def waiting(self, trial: str) -> bool:
        """Reported at its next rung, which is not decided yet."""
        lvl = self.level.get(trial, 0)
        return trial not in self.ended and lvl < len(self.rungs) and trial in self.values.get(lvl, {})

    def may_run(self, trial: str) -> bool:
        return trial not in self.ended and not self.waiting(trial)

    def on_result(self, trial: str, epoch: int, value: float | None) -> Verdict:
        """Trial `trial` finished fine-tune epoch `epoch` with val metric `value`."""
        self._see(trial)
        if trial in self.ended or value is None:
            return Verdict()
        passed = sum(m < epoch for m in self.rungs)  # a restored seed past a rung has passed it
        self.level[trial] = max(self.level[trial], passed)
        lvl = self.level[trial]
        if lvl >= len(self.rungs) or self.rungs[lvl] != epoch:
            return Verdict()
        self.values.setdefault(lvl, {})[trial] = float(value)
        stop, resume = self._judge()
        if trial in stop:
            return Verdict("stop", frozenset(stop - {trial}), frozenset(resume - {trial}))
        action = "continue" if self.level[trial] > lvl else "wait"
        return Verdict(action, frozenset(stop), frozenset(resume - {trial}))

    def on_end(self, trial: str) -> Verdict:
        """Trial `trial` ended (completed, failed or stopped): the rungs no longer wait for it."""
        self._see(trial)
        self.ended.add(trial)
        stop, resume = self._judge()
        return Verdict("stop", frozenset(stop), frozenset(resume))

    def unblock(self) -> Verdict:
        """Decide the lowest open rung with what it holds: when every live trial waits at a rung that
        still counts on seeds which will never report (fewer trials than `expected`)."""
        for i in range(len(self.rungs)):
            if i not in self.judged and self.values.get(i):
                stop, resume = self._judge(force=i)
                return Verdict("stop", frozenset(stop), frozenset(resume))
        return Verdict("stop")

    def _complete(self, i: int) -> bool:
        reached = self.values.get(i, {})
        if i == 0:
            accounted = {t for t in self.level if t in reached or self.level[t] > 0 or t in self.ended}
            return len(accounted) >= self.expected
        return all(t in reached or self.level[t] > i
                   for t in self.level if self.level[t] >= i and t not in self.ended)

    def _judge(self, force: int | None = None) -> tuple[set, set]:
        stop: set = set()
        resume: set = set()
        for i in range(len(self.rungs)):
            if i in self.judged or (i != force and not self._complete(i)):
                continue
            reached = self.values.get(i, {})
            if not reached:
                continue
            alive = sorted((t for t in reached if t not in self.ended and self.level[t] == i),
                           key=lambda t: (-reached[t], self.order.index(t)))
            self.judged.add(i)
            keep = kept_at_rung(len(reached), self.reduction)
            for t in alive[:keep]:
                self.level[t] = i + 1
                resume.add(t)
            for t in alive[keep:]:
                self.ended.add(t)
                stop.add(t)
        return stop, resume

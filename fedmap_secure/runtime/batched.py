"""Batched local training in an in-process simulation: the sites' own code, trained together.

``run_batched(calls)`` runs one call per site (e.g. ``SiteRuntime.handle`` of
a round's announcement) so that the sites' non-private training
(``AdamMapTrainer.train``) is computed for all of them at once
(``training.batched.train_stacked``) while every other line of the site's
code runs unchanged, one site at a time, in site order:

1. site 1's call runs until it asks to train (``AdamMapTrainer.train`` hands
   its arguments to this thread's collector and waits) or returns; then
   site 2's, and so on. Each call runs on its own thread, but only one of them
   runs at any time (the threads are coroutines: a baton passes from one to the
   next), so nothing runs concurrently and the order of every site's own steps is
   the serial engine's;
2. when every call is waiting or done, the waiting training calls are grouped
   by ``stack_key`` (same settings, architecture and prior function) and each
   group trains stacked (a group of one as well); a call that cannot be stacked
   trains by itself (``AdamMapTrainer.train_alone``);
3. each waiting call gets its result and runs on, again one at a time in site
   order, until it waits again (a site that trains twice, e.g. fine-tuning) or
   returns.

The sites' code path is the deployed one (``SiteRuntime`` -> ``Site.train`` ->
``AdamMapTrainer.train``); only the arithmetic of the training loop is shared
between sites, with the weights equal up to float rounding
(``training.batched``). An error in one call stops the others (each waiting
call is cancelled) and is raised, as the serial engine would.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fedmap_secure.training.batched import TrainJob, set_collector, stack_key, train_stacked
from fedmap_secure.training.interface import LocalTrainingResult

T = TypeVar("T")


class _Cancelled(BaseException):
    """Raised in a waiting site's thread when another site's call failed."""


_CANCEL = object()


def train_jobs(jobs: Sequence[TrainJob]) -> list[LocalTrainingResult | BaseException]:
    """Each job's result (or its error): groups of a ``stack_key`` train stacked."""
    from fedmap_secure.training.local import AdamMapTrainer

    outcomes: list[LocalTrainingResult | BaseException | None] = [None] * len(jobs)
    groups: dict[Any, list[int]] = {}
    alone: list[int] = []
    for i, job in enumerate(jobs):
        key = stack_key(job)
        if key is None:
            alone.append(i)
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():  # a group of one too: one arithmetic for every site
        try:
            results = train_stacked([jobs[i] for i in members])
        except Exception as exc:
            for i in members:
                outcomes[i] = exc
            continue
        for i, result in zip(members, results, strict=True):
            outcomes[i] = result
    for i in sorted(alone):
        job = jobs[i]
        try:
            outcomes[i] = AdamMapTrainer(job.config).train_alone(
                job.model, job.x_train, job.y_train, job.prior, job.generator
            )
        except Exception as exc:
            outcomes[i] = exc
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def run_batched(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Every call's return value, in order, their training batched (module docstring)."""
    if len(calls) < 2:
        return [call() for call in calls]
    events: queue.SimpleQueue[tuple[int, str, Any]] = queue.SimpleQueue()
    resume: list[queue.SimpleQueue[object]] = [queue.SimpleQueue() for _ in calls]
    results: list[Any] = [None] * len(calls)

    def park(index: int, job: TrainJob) -> LocalTrainingResult:
        events.put((index, "train", job))
        outcome = resume[index].get()
        if outcome is _CANCEL:
            raise _Cancelled
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, LocalTrainingResult)
        return outcome

    def body(index: int) -> None:
        if resume[index].get() is _CANCEL:  # the baton, or a stop before this site began
            events.put((index, "cancelled", None))
            return
        set_collector(lambda job: park(index, job))
        try:
            results[index] = calls[index]()
        except _Cancelled:
            events.put((index, "cancelled", None))
            return
        except BaseException as exc:
            events.put((index, "error", exc))
            return
        finally:
            set_collector(None)
        events.put((index, "done", None))

    threads = [
        threading.Thread(target=body, args=(i,), name=f"fedmap-site-{i}", daemon=True)
        for i in range(len(calls))
    ]
    for thread in threads:
        thread.start()
    waiting: dict[int, TrainJob] = {}
    failure: BaseException | None = None

    def step(index: int, value: object) -> None:
        """Pass the baton to ``index`` and wait until it waits again or ends."""
        nonlocal failure
        resume[index].put(value)
        got, kind, payload = events.get()
        assert got == index, "only the site holding the baton runs"
        if kind == "train":
            waiting[index] = payload
        elif kind == "error" and failure is None:
            failure = payload

    for i in range(len(calls)):
        step(i, None if failure is None else _CANCEL)
    while waiting:
        order = sorted(waiting)
        jobs = [waiting.pop(i) for i in order]
        outcomes: Sequence[object] = train_jobs(jobs) if failure is None else [_CANCEL] * len(jobs)
        for i, outcome in zip(order, outcomes, strict=True):
            step(i, outcome if failure is None else _CANCEL)
    for thread in threads:
        thread.join()
    if failure is not None:
        raise failure
    return results

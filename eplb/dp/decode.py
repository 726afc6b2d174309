"""Decode stepping: ranks admit waiting requests and every running request generates one token a step.

Each step: arriving requests are assigned to ranks by the router (or, with decode late binding,
wait in the router's queue); each rank admits its waiting requests in FIFO order while a batch slot
and the KV are free; late binding binds queued requests to ranks that can admit them now; every
running request writes one KV token, a rank out of KV preempts its newest requests; finished
requests leave. See :mod:`eplb.dp.simulator` for the model.
"""
from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from eplb.dp.ranks import Batch, RankState
from eplb.dp.results import SimResult, step_seconds
from eplb.dp.routers import Router
from eplb.errors import EplbError
from traces.requests import Requests

__all__ = ["DecodeRun", "LATE_SCAN"]

#: Decode late binding looks at most this far into the router's queue in one step. A bound on the
#: work per step, chosen by hand, not derived.
LATE_SCAN = 64


class DecodeRun:
    """One decode simulation: the state of the ranks, the router's queue and the records, stepped by
    :meth:`run`."""

    def __init__(self, req: Requests, router: Router, ranks: int, astep: np.ndarray, kv_capacity: int,
                 max_batch: int):
        N = len(req)
        self.router, self.ranks, self.astep, self.N = router, ranks, astep, N
        self.inp = req.input_len.astype(np.int64)
        self.out = req.output_len.astype(np.int64)
        self.cap = cap = int(kv_capacity)
        self.max_batch = max_batch
        self.assignment = np.full(N, -1, dtype=np.int64)
        self.first = np.full(N, -1, dtype=np.int64)
        self.gen0 = np.zeros(N, dtype=np.int64)       # tokens generated before the current admission
        self.admit = np.zeros(N, dtype=np.int64)      # step of the current admission
        self.epoch = np.zeros(N, dtype=np.int64)
        self.waited = np.zeros(N, dtype=bool)
        self.is_run = np.zeros(N, dtype=bool)
        self.waitq = [deque() for _ in range(ranks)]
        self.wtok = np.zeros(ranks)                   # prompt + generated tokens of waiting requests
        self.wlen = np.zeros(ranks, dtype=np.int64)   # waiting requests per rank after admission
        self.running = [[] for _ in range(ranks)]
        self.kv = np.zeros(ranks, dtype=np.int64)
        self.nrun = np.zeros(ranks, dtype=np.int64)
        self.heap: list = []                          # (last step, request, epoch) of running requests
        self.state = RankState.empty("decode", ranks, kv_capacity=float(cap), max_batch=float(max_batch))
        self.late = bool(getattr(router, "decode_late_binding", False))
        self.gate = getattr(router, "gate", None)
        self.gate_reserve = int(getattr(router, "gate_reserve", ranks))
        self.central: deque = deque()
        self.done_count = 0
        self.done_out = 0.0
        self.refused = self.preempted = 0
        self.steps, self.kv_rows, self.run_rows = [], [], []
        self.largest = []                             # [S] KV of the largest running request after the step
        self.order = np.argsort(astep, kind="stable")
        self.ptr = 0
        self.live = 0
        self.s = int(astep[self.order[0]]) if N else 0

    def run(self, cost_model=None) -> SimResult:
        """Step until every request is done or refused; the result (step seconds from
        ``cost_model``, if given)."""
        N, order = self.N, self.order
        while self.ptr < N or self.live:
            self.arrive()
            self.admit_waiting()
            self.wlen = np.array([len(q) for q in self.waitq])
            if self.late:
                self.bind_queued()
            if not self.live:
                if self.ptr < N:
                    self.s = int(self.astep[order[self.ptr]])
                continue
            if (self.nrun.sum() == 0 and self.ptr < N and all(not q for q in self.waitq)
                    and not self.central):
                self.s = int(self.astep[order[self.ptr]])
                continue
            self.generate()
            self.record()
            self.finish()
            self.sync_state(np.array([len(q) for q in self.waitq]))
            self.s += 1
        return self.result(cost_model)

    def mean_output(self) -> float:
        """Expected output length of a request: the mean over those finished so far (0 before)."""
        return self.done_out / self.done_count if self.done_count else 0.0

    def sync_state(self, waiting) -> RankState:
        """The router's view of the ranks, with ``waiting`` requests per rank."""
        state, kv = self.state, self.kv
        state.waiting[:] = waiting
        state.running[:] = self.nrun
        state.tokens[:] = kv + self.wtok
        state.attention[:] = kv
        state.kv_usage[:] = kv / self.cap
        return state

    def arrive(self) -> None:
        """Requests arriving by this step: refused when alone they exceed the KV capacity; else into
        the router's queue (late binding, largest prompt first when the router asks) or onto the
        ranks the router assigns."""
        j0 = self.ptr
        while self.ptr < self.N and self.astep[self.order[self.ptr]] <= self.s:
            self.ptr += 1
        if self.ptr == j0:
            return
        inp = self.inp
        ids = self.order[j0:self.ptr]
        fits = inp[ids] + 1 <= self.cap
        self.refused += int((~fits).sum())
        ids = ids[fits]
        if not len(ids):
            return
        if self.late:
            if getattr(self.router, "largest_first", False):  # this step's arrivals, largest prompt first
                ids = ids[np.argsort(-inp[ids], kind="stable")]
            self.central.extend(int(i) for i in ids)
            self.live += len(ids)
            return
        batch = Batch(inp[ids], np.zeros(len(ids), dtype=np.int64), inp[ids])
        self.state.mean_output = self.mean_output()
        ranks_of = np.asarray(self.router.assign(self.state, batch), dtype=np.int64)
        if ranks_of.shape != (len(ids),) or (ranks_of < 0).any() or (ranks_of >= self.ranks).any():
            raise EplbError(f"router {self.router.name} returned invalid ranks")
        for k, i in enumerate(ids):
            r = int(ranks_of[k])
            self.assignment[i] = r
            self.waitq[r].append(int(i))
            self.wtok[r] += inp[i]
        self.live += len(ids)

    def start(self, i, r, need) -> None:
        """Request i starts (or resumes after preemption) running on rank r in this step with need KV tokens."""
        s = self.s
        if s > self.astep[i]:
            self.waited[i] = True
        self.kv[r] += need
        self.nrun[r] += 1
        self.running[r].append(i)
        self.is_run[i] = True
        self.admit[i] = s
        self.epoch[i] += 1
        heapq.heappush(self.heap, (s + int(self.out[i] - self.gen0[i]) - 1, i, int(self.epoch[i])))
        if self.gen0[i] == 0:
            self.first[i] = s

    def admit_waiting(self) -> None:
        """Each rank admits its waiting requests in FIFO order while a batch slot and the KV are
        free; a request grown beyond the capacity while preempted is aborted."""
        inp, gen0, cap, kv, nrun, wtok = self.inp, self.gen0, self.cap, self.kv, self.nrun, self.wtok
        for r in range(self.ranks):
            q = self.waitq[r]
            while q and nrun[r] < self.max_batch:
                i = q[0]
                need = inp[i] + gen0[i]
                if need + 1 > cap:  # can never fit again (grown while preempted): abort
                    q.popleft()
                    wtok[r] -= need
                    self.refused += 1
                    self.live -= 1
                    continue
                if kv[r] + need + 1 > cap:
                    break
                q.popleft()
                wtok[r] -= need
                self.start(i, r, need)

    def bind_queued(self) -> None:
        """Late binding: the router's queue, first come first served, each request bound to a rank
        only when one can admit it now (its own queue empty, a batch slot and the KV free). A request
        that fits nowhere now (or that the router's gate holds back) reserves the rank with the most
        free KV (it is admitted there first) and the ones behind it go on to the other ranks: no
        head-of-line blocking. At most ``gate_reserve`` held requests reserve a rank per step."""
        central, kv, nrun, cap = self.central, self.kv, self.nrun, self.cap
        reserved = self.wlen > 0
        k = 0
        held = 0                              # requests the gate held back this step that reserved a rank
        while k < len(central) and k < LATE_SCAN:
            i = central[k]
            need = self.inp[i]
            free = (nrun < self.max_batch) & ~reserved
            if not free.any():
                break
            ok = free & (kv + need + 1 <= cap)
            gated = False
            if self.gate is not None and ok.any():
                allowed = self.gate(kv, nrun, float(need), int(self.s - self.astep[i]), len(central))
                if allowed is not None:
                    ok &= allowed
                    gated = True
            if not ok.any():
                if gated:             # fits somewhere now but the gate holds it: reserve only within the limit
                    if held >= self.gate_reserve:
                        k += 1
                        continue
                    held += 1
                reserved[int(np.argmax(np.where(free, cap - kv, -1)))] = True
                k += 1
                continue
            del central[k]
            self.state.mean_output = self.mean_output()
            r = int(self.router.bind(self.sync_state(self.wlen), float(need), ok))
            if not ok[r]:
                raise EplbError(f"router {self.router.name} bound request {i} to rank {r}, which cannot admit it")
            self.assignment[i] = r
            self.start(i, r, need)

    def generate(self) -> None:
        """One decode step: every running request writes one more KV token; a rank out of KV
        preempts its newest requests back to the head of its queue (aborted when alone)."""
        kv, nrun, inp, gen0 = self.kv, self.nrun, self.inp, self.gen0
        kv += nrun
        for r in np.flatnonzero(kv > self.cap):
            running = self.running[r]
            while kv[r] > self.cap and running:
                v = running.pop()
                self.is_run[v] = False
                g = int(gen0[v] + self.s - self.admit[v])  # tokens before this step; this step's is lost
                kv[r] -= inp[v] + g + 1
                nrun[r] -= 1
                self.epoch[v] += 1
                gen0[v] = g
                if not running:
                    self.refused += 1      # alone it does not fit: abort
                    self.live -= 1
                else:
                    self.preempted += 1
                    self.waitq[r].appendleft(v)
                    self.wtok[r] += inp[v] + g

    def record(self) -> None:
        """The step's KV and running requests per rank, and the KV of its largest running request."""
        self.steps.append(self.s)
        if self.is_run.any():
            self.largest.append(float((self.inp + self.gen0 + (self.s - self.admit) + 1)[self.is_run].max()))
        else:
            self.largest.append(0.0)
        self.kv_rows.append(self.kv.astype(np.float64).copy())
        self.run_rows.append(self.nrun.astype(np.float64).copy())

    def finish(self) -> None:
        """Requests that generated their last token leave at the end of the step."""
        heap = self.heap
        while heap and heap[0][0] <= self.s:
            _, i, ep = heapq.heappop(heap)
            if ep != self.epoch[i]:
                continue
            r = int(self.assignment[i])
            self.running[r].remove(i)
            self.is_run[i] = False
            self.kv[r] -= self.inp[i] + self.out[i]
            self.nrun[r] -= 1
            self.live -= 1
            self.done_count += 1
            self.done_out += self.out[i]

    def result(self, cost_model) -> SimResult:
        ranks = self.ranks
        kvs = np.array(self.kv_rows).reshape(-1, ranks)
        runs = np.array(self.run_rows).reshape(-1, ranks)
        sec = step_seconds(cost_model, kvs, runs)
        return SimResult(self.router.name, "decode", ranks, self.assignment, self.astep.astype(np.int64), self.first,
                         np.array(self.steps, dtype=np.int64), runs, kvs, kvs, runs, refused=self.refused,
                         queued=int(self.waited.sum()), preempted=self.preempted, step_seconds=sec,
                         info={"kv_capacity": self.cap, "max_batch": int(self.max_batch),
                               "warmup_steps": int(np.ceil(self.out.mean())) if self.N else 0,
                               "largest_kv": np.array(self.largest, dtype=np.float64)})

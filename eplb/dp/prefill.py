"""Prefill stepping: ranks compute chunks of their FIFO queues step by step (chunked prefill).

Each step: arriving requests are assigned to ranks by the router (or, with a late-binding router,
wait in the router's queue); the step is planned (:func:`eplb.dp.chunks.plan_step`), cut to the
router's attention target when it has one, and carried out; per rank the step's tokens, attention
pairs and requests are recorded. See :mod:`eplb.dp.simulator` for the model.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from eplb.dp.chunks import TRIMS, plan_continuations, plan_step, trim
from eplb.dp.ranks import Batch, RankState
from eplb.dp.results import SimResult, step_seconds
from eplb.dp.routers import Router
from eplb.errors import EplbError
from traces.requests import Requests

__all__ = ["PrefillRun"]


class PrefillRun:
    """One prefill simulation: the state of the ranks, the router's queue and the records, stepped
    by :meth:`run`."""

    def __init__(self, req: Requests, router: Router, ranks: int, astep: np.ndarray, token_budget: int,
                 attention_budget: float | None = None):
        N = len(req)
        self.router, self.ranks, self.astep, self.N = router, ranks, astep, N
        self.n_all = req.new_tokens.astype(np.int64)
        self.p_all = req.cached.astype(np.int64)
        self.inp_all = req.input_len.astype(np.int64)
        self.assignment = np.full(N, -1, dtype=np.int64)
        self.first = np.full(N, -1, dtype=np.int64)
        self.queues = [deque() for _ in range(ranks)]
        self.state = RankState.empty("prefill", ranks)
        self.started = np.zeros(N, dtype=bool)
        self.steps, self.tok_rows, self.att_rows, self.req_rows = [], [], [], []
        self.loaded_rows, self.spread_rows = [], []
        self.order = np.argsort(astep, kind="stable")
        self.ptr = 0
        self.s = int(astep[self.order[0]]) if N else 0
        self.pending = 0
        self.budget = int(token_budget)
        self.attention_budget = attention_budget
        self.hard = np.inf if attention_budget is None else float(attention_budget)
        self.late = bool(getattr(router, "late_binding", False))
        self.target_hook = getattr(router, "attention_target", None)
        self.min_chunk = max(1, int(getattr(router, "min_chunk", 1))) if self.target_hook is not None else 1
        self.density = float(self.budget) / 2.0  # attention pairs per token of the last step (first guess: fresh prompts)
        self.central: deque = deque()
        self.outstanding = 0.0

    def run(self, cost_model=None) -> SimResult:
        """Step until every request is done; the result (step seconds from ``cost_model``, if given)."""
        while self.ptr < self.N or self.pending:
            self.arrive()
            if not self.pending:
                self.s = int(self.astep[self.order[self.ptr]])
                continue
            self.record_spread()
            plans, binds, (tok, att, cnt) = self.plan()
            self.carry_out(plans)
            if binds:
                self.bind(binds)
            self.loaded_rows.append(self.outstanding >= self.ranks * self.budget)
            self.outstanding -= float(tok.sum())
            self.steps.append(self.s)
            self.tok_rows.append(tok)
            self.att_rows.append(att)
            self.req_rows.append(cnt)
            self.s += 1
        return self.result(cost_model)

    def arrive(self) -> None:
        """Requests arriving by this step: into the router's queue (late binding) or onto the ranks
        the router assigns."""
        j0 = self.ptr
        while self.ptr < self.N and self.astep[self.order[self.ptr]] <= self.s:
            self.ptr += 1
        if self.ptr == j0:
            return
        ids = self.order[j0:self.ptr]
        self.outstanding += float(self.n_all[ids].sum())
        if self.late:
            self.central.extend(int(i) for i in ids)
            self.pending += self.ptr - j0
            return
        n_all, p_all, state = self.n_all, self.p_all, self.state
        batch = Batch(n_all[ids], p_all[ids], self.inp_all[ids])
        ranks_of = np.asarray(self.router.assign(state, batch), dtype=np.int64)
        if ranks_of.shape != (len(ids),) or (ranks_of < 0).any() or (ranks_of >= self.ranks).any():
            raise EplbError(f"router {self.router.name} returned invalid ranks")
        pairs = batch.pairs
        for k, i in enumerate(ids):
            r = int(ranks_of[k])
            self.assignment[i] = r
            self.queues[r].append([int(i), int(n_all[i]), int(p_all[i])])  # id, remaining, context
            state.waiting[r] += 1
            state.tokens[r] += n_all[i]
            state.attention[r] += pairs[k]
        self.pending += len(ids)

    def record_spread(self) -> None:
        """Whether this step is loaded: the work a perfect router could spread this step (requests
        not started anywhere, plus what each rank can do of its started, sticky, requests, at most
        one budget) fills every rank's budget."""
        held = np.zeros(self.ranks)
        for r in range(self.ranks):
            for item in self.queues[r]:
                if not self.started[item[0]]:
                    break
                held[r] += item[1]
        spread = self.outstanding - float(held.sum()) + float(np.minimum(held, self.budget).sum())
        self.spread_rows.append(spread >= self.ranks * self.budget)

    def plan(self):
        """Plan the step. A router with an attention target caps every rank's attention at a target
        estimated before planning (each rank's continuations, plus its budget left filled at the
        previous step's attention per token), then cuts the plan to the target of its own attention
        (at most TRIMS rounds, the cap only tightens). Returns (plans, binds, (tok, att, cnt))."""
        budget, hard, queues, hook = self.budget, self.hard, self.queues, self.target_hook
        acap = np.full(self.ranks, np.inf)
        if hook is not None:
            ctok, catt, _ = plan_continuations(queues, budget, acap, 1, hard)[1]
            if self.late and self.central:
                catt = catt + (budget - ctok) * self.density
            acap[:] = float(hook(catt))
        plans, binds, (tok, att, cnt) = plan_step(queues, self.central if self.late else None, budget, acap, hard,
                                                  self.min_chunk, self.router, self.n_all, self.p_all)
        if hook is not None:
            # the plan's own attention gives a tighter target when it is over: cut the ranks above it
            for _ in range(TRIMS):
                T = float(hook(att))
                if not T < acap[0]:
                    break
                acap[:] = T
                plans, binds = trim(plans, binds, tok, att, cnt, queues, T, self.min_chunk, self.n_all, self.p_all)
            if tok.sum() > 0:
                self.density = float(att.sum()) / float(tok.sum())
        return plans, binds, (tok, att, cnt)

    def carry_out(self, plans) -> None:
        """Each rank computes its planned chunks of its own queue."""
        state, s = self.state, self.s
        for r in range(self.ranks):
            q = self.queues[r]
            done_tok = done_att = 0.0
            for c in plans[r]:
                item = q[0]
                i, rem, ctx = item
                done_tok += c
                done_att += c * ctx + c * (c + 1) / 2.0
                if not self.started[i]:
                    self.started[i] = True
                    state.waiting[r] -= 1
                    state.running[r] += 1
                if c == rem:
                    q.popleft()
                    self.first[i] = s
                    state.running[r] -= 1
                    self.pending -= 1
                else:
                    item[1] = rem - c
                    item[2] = ctx + c
            state.tokens[r] -= done_tok
            state.attention[r] = max(0.0, state.attention[r] - done_att)

    def bind(self, binds) -> None:
        """Carry out the router's bindings ``(request, rank, chunk)`` of queued requests: each
        leaves the router's queue and stays on its rank."""
        n_all, s = self.n_all, self.s
        bound = set()
        for i, r, c in binds:
            bound.add(i)
            self.assignment[i] = r
            self.started[i] = True
            if c == n_all[i]:
                self.first[i] = s
                self.pending -= 1
            else:
                self.queues[r].append([i, int(n_all[i] - c), int(self.p_all[i]) + c])
                self.state.running[r] += 1
        central = self.central
        while central and central[0] in bound:
            bound.discard(central.popleft())
        if bound:
            self.central = deque(i for i in central if i not in bound)

    def result(self, cost_model) -> SimResult:
        ranks = self.ranks
        tokens = np.array(self.tok_rows).reshape(-1, ranks)
        attention = np.array(self.att_rows).reshape(-1, ranks)
        sec = step_seconds(cost_model, attention, tokens)
        return SimResult(self.router.name, "prefill", ranks, self.assignment, self.astep.astype(np.int64), self.first,
                         np.array(self.steps, dtype=np.int64), tokens, attention, None,
                         np.array(self.req_rows).reshape(-1, ranks), step_seconds=sec,
                         loaded=np.array(self.spread_rows, dtype=bool),
                         info={"token_budget": self.budget, "attention_budget": self.attention_budget,
                               "loaded_total": np.array(self.loaded_rows, dtype=bool)})

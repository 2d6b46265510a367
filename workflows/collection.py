"""The collection workflow (type `LoanCollection`): one long-lived run per overdue loan, a thin
shell around the decider (`models.lifecycle`).

The shell does three things and decides nothing:
- requests come by signal and are answered by query (`models.protocol`); the handler only
  records the request (no decision, activity, timer or patch in a handler) and wakes the loop,
  which takes it at its next quiet moment with the decider's `decide`, queues the commands it
  returns and keeps the answer;
- the main loop runs the queued commands through activities, in order (a guard question on its
  own, consecutive effects as one batch), and feeds each result back to the decider as an event;
- when nothing is queued it sleeps until the decider's `next_wake` and feeds the time in.

So the order of commands in a workflow task depends only on the order of events in the history.
The loop's time is the history's time (a timer's target, an activity's finish), never a worker's
reading of the clock, and it continues as new (carrying the state) when the history grows long.
Loans started before this shell run `workflows/legacy/collection_v1.py` to their close.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():  # workflows.calls: the activities, by name
    from infra import search_attributes as sa
    from infra.options import ACTIVITY_RETRY as _RETRY
    from infra.options import ACTIVITY_TIMEOUT as _TIMEOUT
    from models import lifecycle
    from models.arrangements import Decision
    from models.clock import real_delay, virtual_now
    from models.conduct import GuardDecision
    from models.effects import AskGuard, Command, Effect, EffectBatch, is_effect
    from models.payment import Payment, PaymentReceipt
    from models.protocol import REPLIES_KEPT, Envelope, Reply, StatusAsked
    from models.requests import PrepareRequest
    from models.status import CarriedRequest, CollectionInput, CollectionState, CollectionStatus
    from workflows import calls

WORKFLOW_TYPE = "LoanCollection"
HISTORY_CAP = 10_000
"""Events after which a run continues as new whatever the server's settings: the server's
suggestion comes at 4,096 by default (a setting a cluster may raise), and its hard limit
(51,200) terminates the run."""
_SHORTEST_SLEEP = timedelta(milliseconds=1)


@workflow.defn(name=WORKFLOW_TYPE)
class CollectionWorkflow:
    @workflow.init
    def __init__(self, inp: CollectionInput) -> None:
        self._input = inp
        self._s: CollectionState | None = inp.state
        self._queue: list[Command] = []
        self._inbox: list[_Request] = [_Request(env=Envelope.model_validate(c.envelope)) for c in inp.inbox]
        self._roll_over_asked = False
        self._replies: dict[str, Reply] = dict(inp.replies)
        self._running = False  # an activity of the loop is in flight

    # ---------------------------------------------------------------- the loop

    @workflow.run
    async def run(self, inp: CollectionInput) -> CollectionStatus:
        if self._s is None:
            await self._begin(inp)
        while True:
            await self._drain()
            s = self._state
            if s.closed_as is not None:
                break
            if self._roll_over_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CollectionInput(
                        loan=s.loan,
                        policy=inp.policy,
                        state=s,
                        replies=self._replies,
                        inbox=[CarriedRequest(envelope=r.env.model_dump(mode="json")) for r in self._inbox],
                    )
                )
            await self._next(s)
        await workflow.wait_condition(workflow.all_handlers_finished)
        for request in self._inbox:  # taken after the close: each refused, nothing changed
            self._apply_request(request)
        return lifecycle.status(self._state, lifecycle.clock_of(self._state), workflow.info().workflow_id)

    async def _begin(self, inp: CollectionInput) -> None:
        """Pin the policy and rules, screen and register the loan (one activity), then start
        deciding. `inp.policy` "auto": the activity chose the policy (`activities.start`)."""
        info = workflow.info()
        prepared = await workflow.execute_activity(
            calls.prepare,
            PrepareRequest(loan=inp.loan, policy=inp.policy, workflow_id=info.workflow_id, started_at=info.start_time),
            start_to_close_timeout=_TIMEOUT,
            retry_policy=_RETRY,
        )
        outcome = lifecycle.begin(
            inp.loan,
            prepared.policy,
            prepared.rules,
            prepared.started_at,
            workflow_id=info.workflow_id,
            search_ready=prepared.search_ready,
            strategy=prepared.strategy,  # None for loans prepared before screening: nothing changes
        )
        self._s = outcome.state
        self._queue += outcome.commands
        self._sync_search()

    async def _next(self, s: CollectionState) -> None:
        """At a quiet moment (nothing queued, nothing running): run what is due by the loan's
        clock; else wait until the next item is due or a request comes, and take that.

        Requests are taken here, one per quiet moment, never in the handler that received them
        and never between an activity's result and what the loop does with it: within one
        workflow task the SDK may hand the workflow a request before or after an activity's
        result or a timer (a fresh worker and the replay of its history can group them
        differently), and only a fixed point makes what the loan does the same either way. The
        wait always starts its timer, even with a request already waiting, so the workflow's
        timers are numbered alike in both cases (a timer started and cancelled within one task
        never reaches the server). With the SDK's single-batch job processing (`worker.py`) a
        timer that fired in the same task as a request wins over it, as when they come apart."""
        clock = lifecycle.clock_of(s)
        wake = lifecycle.next_wake(s)
        if wake is not None and wake <= clock:  # due already (a request made it so, or time caught up)
            self._feed(lifecycle.TimeReached(at=clock), clock)
            return
        try:
            await workflow.wait_condition(
                self._wake_condition, timeout=None if wake is None else self._delay_until(wake)
            )
        except TimeoutError:
            assert wake is not None
            self._feed(lifecycle.TimeReached(at=wake), wake)
            return
        if self._inbox:
            self._apply_request(self._inbox.pop(0))

    def _delay_until(self, wake: datetime) -> timedelta:
        """Real time to sleep until business time `wake` (at least a moment: timers are positive)."""
        s = self._state
        now = max(lifecycle.clock_of(s), virtual_now(workflow.now(), s.policy.clock))
        return max(real_delay(wake - now, s.policy.clock), _SHORTEST_SLEEP)

    def _wake_condition(self) -> bool:
        return bool(self._inbox) or self._roll_over_due()

    def _roll_over_due(self) -> bool:
        """Continue as new: the server suggests it, an operator asked, or the history reached
        HISTORY_CAP."""
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or self._roll_over_asked
            or info.get_current_history_length() >= HISTORY_CAP
        )

    async def _drain(self) -> None:
        """Run the queued commands in order until none is left (results may queue more)."""
        self._running = True
        try:
            await self._run_queue()
        finally:
            self._running = False

    async def _run_queue(self) -> None:
        while self._queue:
            if isinstance(self._queue[0], AskGuard):
                ask = self._queue.pop(0)
                assert isinstance(ask, AskGuard)
                decision: GuardDecision = await workflow.execute_activity(
                    calls.request_contact,
                    ask.req,
                    start_to_close_timeout=_TIMEOUT,
                    retry_policy=_RETRY,
                )
                self._feed(
                    lifecycle.GuardAnswered(key=ask.key, decision=decision),
                    decision.decided_at or lifecycle.clock_of(self._state),
                )
                continue
            batch: list[Effect] = []
            while self._queue and is_effect(head := self._queue[0]):
                self._queue.pop(0)
                batch.append(head)
            result = await workflow.execute_activity(
                calls.perform,
                EffectBatch(effects=batch),
                start_to_close_timeout=_TIMEOUT,
                retry_policy=_RETRY,
            )
            at = virtual_now(result.at, self._state.policy.clock)
            for effect, done in zip(batch, result.results, strict=True):
                self._feed(lifecycle.EffectDone(effect=effect, result=done), at)

    def _feed(self, event: lifecycle.Event, at: datetime) -> None:
        """Decide a loop event at `at`, queue its commands, keep the search attributes current."""
        self._queue += lifecycle.decide(self._state, event, at).commands
        self._sync_search()

    def _sync_search(self) -> None:
        """Keep the portfolio's search attributes current (only what changed is upserted); they
        carry no personal data."""
        s = self._state
        if not s.search_ready:
            return
        changed = lifecycle.search_changes(s, lifecycle.clock_of(s))
        if changed:
            workflow.upsert_search_attributes(sa.updates(changed))
            s.search_values.update(changed)

    # ---------------------------------------------------------------- requests: they only record

    def _query_time(self, real: datetime | None = None) -> datetime:
        """Business time for a query at real instant `real` (default: the workflow's clock; a
        query decides nothing, so it may read it: stale by the time since the last task, never
        used for what the loan does), never before the loan's own clock."""
        s = self._state
        return lifecycle.request_time(s, virtual_now(real or workflow.now(), s.policy.clock))

    @workflow.query
    def check(self, env: Envelope) -> Reply | None:
        """Would the loan refuse this request? A dry run: nothing is written. None: it would
        take it, or it is a request whose answer depends on today's date (a promise, plan or
        settlement is checked against its dates): a query only knows the time of the workflow's
        last task, so those are checked when the loan takes them, on the server's clock."""
        if self._s is None:
            return _starting(env.request_id)
        if isinstance(env.request, (StatusAsked, *_DATED)):
            return None
        try:
            at = virtual_now(env.sent_at, self._s.policy.clock) if env.sent_at else self._query_time()
            lifecycle.check(self._s, env.request, at)
        except lifecycle.Rejected as exc:
            return Reply(request_id=env.request_id, refused=True, refusal=exc.kind, reason=str(exc))
        return None

    @workflow.signal
    def request(self, env: Envelope) -> None:
        """Record a request (the loop takes it at its next quiet moment, `_next`); its answer is
        kept for the `reply` query."""
        self._inbox.append(_Request(env=env))

    def _apply_request(self, request: _Request) -> None:
        """Take a request: apply it with the decider (or record its refusal), queue its commands,
        keep the answer."""
        env, s = request.env, self._state
        if env.request_id in self._replies:  # the same request sent twice: the first answer stands
            return
        sent = virtual_now(env.sent_at, s.policy.clock) if env.sent_at else lifecycle.clock_of(s)
        at = lifecycle.request_time(s, sent)
        if isinstance(env.request, StatusAsked):
            self._remember(Reply(request_id=env.request_id, as_of=at))
            return
        event = env.request
        if isinstance(event, lifecycle.AgencyContactAsked):  # its answer is kept under the request id
            event = event.model_copy(update={"key": env.request_id})
        try:
            outcome = lifecycle.decide(s, event, at)
        except lifecycle.Rejected as exc:  # it changed since the client's check: nothing applied
            reply = Reply(request_id=env.request_id, refused=True, refusal=exc.kind, reason=str(exc))
        else:
            self._queue += outcome.commands
            self._sync_search()
            reply = _reply(env, outcome.reply, at)
        if not env.request_id.startswith(BANK_FEED):
            self._remember(reply)

    def _remember(self, reply: Reply) -> None:
        self._replies[reply.request_id] = reply
        for old in list(self._replies)[:-REPLIES_KEPT]:
            del self._replies[old]

    @workflow.query
    def reply(self, request_id: str) -> Reply | None:
        """The answer to a request (None: not taken yet). An agency's contact request stays
        `pending` until the guard answers; a status request gets the status as of when it was taken."""
        found = self._replies.get(request_id)
        if found is None or self._s is None:
            return found
        if found.pending:
            answer = self._s.agency_answers.get(request_id)
            return found if answer is None else found.model_copy(update={"pending": False, "guard": answer})
        if found.as_of is not None:
            return found.model_copy(
                update={"status": lifecycle.status(self._s, found.as_of, workflow.info().workflow_id)}
            )
        return found

    @workflow.signal
    def payment_received(self, payment: Payment) -> None:
        """A bank feed's payment: nobody reads an answer, a payment that cannot be applied is
        recorded as rejected. (`starter.send_bank_payment` sends it as a stamped `request`; this
        signal is for raw clients, and takes the loan's clock.)"""
        self.request(
            Envelope(
                request_id=f"{BANK_FEED}{payment.payment_id}",
                request=lifecycle.PaymentReceived(payment=payment, answer=False),
            )
        )

    @workflow.signal
    def roll_over(self) -> None:
        """Continue as new at the next quiet moment (an operator's tool after a deploy)."""
        if self._s is None or self._s.closed_as is None:
            self._roll_over_asked = True

    # ---------------------------------------------------------------- reading

    @workflow.query
    def status(self) -> CollectionStatus:
        """The status as of the workflow's last task (free; writes no history)."""
        return self.status_at(workflow.now())

    @workflow.query
    def status_at(self, at: datetime) -> CollectionStatus:
        """The status as of `at`, the caller's now (the server's clock): the loan's state brought
        to that moment by the decider's own view functions (DPD, stage, what is due next). Writes
        no history, so a desk or platform may poll it as often as it likes; a moment before the
        loan's own clock reads as the loan's clock."""
        if self._s is None:
            raise ApplicationError("collection is starting; ask again in a moment")
        return lifecycle.status(self._s, self._query_time(at), workflow.info().workflow_id)

    @workflow.query
    def busy(self) -> bool:
        """Whether requests or effects are waiting or running (a request's answer comes before
        its effects are written; tools that read the database right after wait for this)."""
        return self._running or bool(self._queue) or bool(self._inbox) or self._s is None

    @workflow.query
    def state(self) -> CollectionState:
        """Everything the loan knows (tools, the simulator's fidelity test)."""
        if self._s is None:
            raise ApplicationError("collection is starting; ask again in a moment")
        return self._s

    @property
    def _state(self) -> CollectionState:
        assert self._s is not None, "state is set before any handler or step runs"
        return self._s


@dataclass(frozen=True)
class _Request:
    """A request as the handler recorded it."""

    env: Envelope


BANK_FEED = "bank-feed/"
"""Request ids of bank-feed payments (a signal nobody reads an answer to)."""

_DATED = (lifecycle.PromiseMade, lifecycle.PlanProposed, lifecycle.SettlementOffered, lifecycle.HardshipReviewed)
"""Requests whose check compares dates with today (see `check`)."""


def _starting(request_id: str) -> Reply:
    return Reply(
        request_id=request_id,
        refused=True,
        refusal="CollectionStarting",
        reason="collection is starting; ask again in a moment",
    )


def _reply(env: Envelope, value: PaymentReceipt | Decision | str | None, at: datetime) -> Reply:
    """The answer to a request the loan took: a receipt, a decision, the guard's answer to come
    (an agency's contact request), or the status as of the request (a report)."""
    if isinstance(value, PaymentReceipt):
        return Reply(request_id=env.request_id, receipt=value)
    if isinstance(value, Decision):
        return Reply(request_id=env.request_id, decision=value)
    if isinstance(env.request, lifecycle.AgencyContactAsked):
        return Reply(request_id=env.request_id, pending=True)
    return Reply(request_id=env.request_id, as_of=at)

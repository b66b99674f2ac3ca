"""Iteration-level (continuous) batching over a KV cache: the LM serving engine.

One `Scheduler` owns the cache's slots (one per running sequence, at most
`EngineLimits.max_seqs`) and a bounded queue of sequences waiting for one. Each
iteration it admits waiting sequences into free slots and prefills them (their
first token), and runs ONE decode forward pass for every other running sequence
together, each at its own position. A sequence that ends (its `max_tokens`, the
context, EOT) or is cancelled (a stop string matched, its client went away)
gives its slot back before the next iteration, so the next waiting one joins
then.

`Engine` runs that loop on an asyncio event loop (the forward pass in a worker
thread, so the loop keeps taking requests): `submit` returns a `Stream`, an
async iterator of token ids, or raises `QueueFull`; leaving the iteration early
(`Stream.cancel`, or closing the `generate` iterator) ends the sequence at once.
`run_batch` is the same scheduler without asyncio: the bare batched decode loop.

Counters (`stats()`): decode steps run, the batch size of each, prefills,
running and waiting sequences, and per-request records (decode steps each took
part in, steps shared with another sequence, steps counted when it was
cancelled) that tests and benchmarks read.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import secrets
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from lm.model import GPT
from lm.serving.kvcache import KVCache, decode, prefill, sample
from lm.tokenizer import EOT

RECENT_RECORDS = 1024  # per-request records kept for stats()


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random stream per request
    stop_at_eot: bool = True  # the end-of-text token ends the sequence

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 (got {self.max_tokens})")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")


@dataclass(frozen=True)
class EngineLimits:
    max_seqs: int = 16  # sequences decoded together (KV cache slots)
    max_queue: int = 64  # sequences waiting for a slot; one more is QueueFull
    context: int | None = None  # positions per sequence; None: the model's

    def __post_init__(self) -> None:
        if self.max_seqs < 1:
            raise ValueError(f"max_seqs must be >= 1 (got {self.max_seqs})")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0 (got {self.max_queue})")


class QueueFull(Exception):
    """Every slot is taken and the queue is at its limit: retry later."""


class EngineError(RuntimeError):
    """The forward pass failed; every sequence running then gets this."""


@dataclass(eq=False)
class Sequence:
    id: str
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    slot: int = -1
    position: int = 0  # where the last token goes into the cache
    last: int = 0  # the last token drawn, fed at the next decode step
    generated: int = 0
    decode_steps: int = 0  # decode steps started with this sequence in them
    shared_steps: int = 0  # of those, steps with another sequence in them too
    steps_at_cancel: int | None = None
    finish_reason: str | None = None  # "stop", "length", "cancelled", "error"
    cancelled: bool = False
    on_token: object = None  # callable(token | None, finish | None, error | None)

    def record(self) -> dict:
        return {
            "prompt_tokens": len(self.prompt),
            "completion_tokens": self.generated,
            "decode_steps": self.decode_steps,
            "shared_steps": self.shared_steps,
            "steps_at_cancel": self.steps_at_cancel,
            "finish_reason": self.finish_reason,
        }


@dataclass
class Plan:
    prefill: list[Sequence] = field(default_factory=list)
    decode: list[Sequence] = field(default_factory=list)


class Scheduler:
    """Slots, the waiting queue and the counters. `plan` and `apply` run on one
    thread (the event loop's); `compute` touches only the cache and the planned
    sequences' random generators, so it may run on another."""

    def __init__(self, model: GPT, limits: EngineLimits):
        self.model = model
        self.limits = limits
        self.cache = KVCache(model, limits.max_seqs, limits.context)
        self.context = self.cache.context
        self.free = list(range(limits.max_seqs))  # a heap
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: dict[int, Sequence] = {}  # slot -> sequence
        self.in_flight: set[Sequence] = set()
        self.steps = 0
        self.prefills = 0
        self.tokens = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.finished: collections.Counter[str] = collections.Counter()
        self.recent: collections.OrderedDict[str, dict] = collections.OrderedDict()

    # ------------------------------------------------------------ admission
    def add(self, seq: Sequence) -> None:
        if not 1 <= len(seq.prompt) < self.context:
            raise ValueError(
                f"prompt of {len(seq.prompt)} tokens; the context holds "
                f"{self.context}, with room for at least one new token"
            )
        if bad := [t for t in seq.prompt if not 0 <= t <= EOT]:
            raise ValueError(f"token id {bad[0]} is not in 0..{EOT}")
        # free slots take waiting sequences at the next iteration
        if len(self.waiting) >= len(self.free) + self.limits.max_queue:
            raise QueueFull(
                f"{len(self.running)} sequences running and {len(self.waiting)} "
                "waiting: the queue is full"
            )
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ------------------------------------------------------------ one iteration
    def plan(self) -> Plan:
        # in slot order: neighbouring slots are read as one view (kvcache.decode)
        plan = Plan(decode=[self.running[slot] for slot in sorted(self.running)])
        while self.free and self.waiting:
            seq = self.waiting.popleft()
            seq.slot = heapq.heappop(self.free)  # the lowest: slots stay packed
            self.running[seq.slot] = seq
            plan.prefill.append(seq)
        for seq in plan.decode:
            seq.decode_steps += 1
            seq.shared_steps += len(plan.decode) > 1
        if plan.decode:
            self.steps += 1
            self.batch_sizes[len(plan.decode)] += 1
        self.prefills += len(plan.prefill)
        self.in_flight = {*plan.prefill, *plan.decode}
        return plan

    def compute(self, plan: Plan) -> list[int]:
        """The next token of every planned sequence: prefill's, then decode's."""
        rows = [prefill(self.model, self.cache, s.slot, s.prompt) for s in plan.prefill]
        if plan.decode:
            logits = decode(
                self.model,
                self.cache,
                [s.slot for s in plan.decode],
                [s.last for s in plan.decode],
                [s.position for s in plan.decode],
            )
            rows.extend(logits)
        seqs = plan.prefill + plan.decode
        if not seqs:
            return []
        cpu = torch.stack(rows).float().cpu()  # one transfer per step
        return sample(
            cpu,
            [s.params.temperature for s in seqs],
            [s.params.top_p for s in seqs],
            [s.generator for s in seqs],
        )

    def apply(self, plan: Plan, tokens: list[int]) -> None:
        """Hand each planned sequence its token; end and free what is done."""
        self.in_flight = set()
        for seq, token in zip(plan.prefill + plan.decode, tokens, strict=True):
            if seq.cancelled:  # cancelled while this step ran
                self._finish(seq, "cancelled")
                continue
            seq.position = len(seq.prompt) if seq.generated == 0 else seq.position + 1
            seq.last = token
            seq.generated += 1
            self.tokens += 1
            finish = None
            if token == EOT and seq.params.stop_at_eot:
                finish = "stop"
            elif (
                seq.generated >= seq.params.max_tokens
                or seq.position + 1 >= self.context
            ):
                finish = "length"
            if token != EOT or not seq.params.stop_at_eot:
                seq.on_token(token, None, None)
            if finish:
                self._finish(seq, finish)

    def cancel(self, seq: Sequence) -> None:
        """End `seq` now: out of the queue, or its slot freed (after the step
        running it, if one is). Nothing more is decoded for it."""
        if seq.finish_reason is not None or seq.cancelled:
            return
        seq.cancelled = True
        seq.steps_at_cancel = seq.decode_steps
        if seq in self.in_flight:
            return  # apply() frees it when the step returns
        if seq in self.waiting:
            self.waiting.remove(seq)
        self._finish(seq, "cancelled")

    def fail_all(self, error: BaseException) -> None:
        for seq in [*self.waiting, *self.running.values()]:
            seq.on_token(None, None, error)
            self._finish(seq, "error", notify=False)
        self.waiting.clear()
        self.in_flight = set()

    def _finish(self, seq: Sequence, reason: str, notify: bool = True) -> None:
        seq.finish_reason = reason
        if self.running.get(seq.slot) is seq:
            del self.running[seq.slot]
            heapq.heappush(self.free, seq.slot)
        self.finished[reason] += 1
        self.recent[seq.id] = seq.record()
        while len(self.recent) > RECENT_RECORDS:
            self.recent.popitem(last=False)
        if notify:
            seq.on_token(None, reason, None)

    def stats(self) -> dict:
        return {
            "steps": self.steps,
            "prefills": self.prefills,
            "tokens": self.tokens,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "running": len(self.running),
            "waiting": len(self.waiting),
            "max_seqs": self.limits.max_seqs,
            "max_queue": self.limits.max_queue,
            "context": self.context,
            "finished": dict(self.finished),
            "requests": dict(self.recent),
        }


_END = object()
_ids = itertools.count()


def _generator(seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)


class Stream:
    """The tokens of one sequence as they are drawn (EOT is not yielded). After
    the iteration: `finish_reason`, `prompt_tokens`, `completion_tokens`."""

    def __init__(self, engine: Engine, seq: Sequence):
        self._engine = engine
        self._seq = seq
        self._queue: asyncio.Queue = asyncio.Queue()
        seq.on_token = self._deliver

    @property
    def id(self) -> str:
        return self._seq.id

    @property
    def finish_reason(self) -> str | None:
        return self._seq.finish_reason

    @property
    def prompt_tokens(self) -> int:
        return len(self._seq.prompt)

    @property
    def completion_tokens(self) -> int:
        return self._seq.generated

    def _deliver(self, token, finish, error) -> None:
        if error is not None:
            self._queue.put_nowait(error)
        elif finish is not None:
            self._queue.put_nowait(_END)
        else:
            self._queue.put_nowait(token)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> int:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise EngineError(f"generation failed: {item}") from item
        return item

    def cancel(self) -> None:
        """Stop generating for this stream (idempotent; a no-op once ended)."""
        self._engine._scheduler.cancel(self._seq)


class Engine:
    """The batching loop of one replica, on the running event loop."""

    def __init__(
        self, model: GPT, limits: EngineLimits | None = None, *, thread: bool = True
    ):
        self._scheduler = Scheduler(model.eval(), limits or EngineLimits())
        # One worker: steps run one after another, off the event loop.
        self._executor = ThreadPoolExecutor(1, "lm-engine") if thread else None
        self._task: asyncio.Task | None = None

    @property
    def context(self) -> int:
        return self._scheduler.context

    @property
    def limits(self) -> EngineLimits:
        return self._scheduler.limits

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
    ) -> Stream:
        """Queue a sequence; raises QueueFull (retry later) or ValueError (the
        prompt does not fit the context)."""
        seq = Sequence(
            id=request_id or f"seq-{next(_ids)}",
            prompt=list(prompt_ids),
            params=params,
            generator=_generator(params.seed),
        )
        stream = Stream(self, seq)
        self._scheduler.add(seq)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return stream

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
    ) -> AsyncIterator[int]:
        """Token ids as they are drawn; closing the iterator early ends the
        sequence (its slot is free for the next)."""
        stream = self.submit(prompt_ids, params, request_id)
        try:
            async for token in stream:
                yield token
        finally:
            stream.cancel()

    async def _loop(self) -> None:
        sched = self._scheduler
        loop = asyncio.get_running_loop()
        try:
            while sched.has_work():
                plan = sched.plan()
                if self._executor is None:
                    tokens = sched.compute(plan)
                    await asyncio.sleep(0)  # let requests in between steps
                else:
                    tokens = await loop.run_in_executor(
                        self._executor, sched.compute, plan
                    )
                sched.apply(plan, tokens)
        except Exception as exc:  # fail every sequence rather than hang them
            sched.fail_all(exc)
        finally:
            self._task = None

    async def wait_idle(self) -> None:
        """Return once no sequence is running or waiting (the loop has ended)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def stats(self) -> dict:
        return self._scheduler.stats()

    def close(self) -> None:
        for seq in [*self._scheduler.waiting, *self._scheduler.running.values()]:
            self._scheduler.cancel(seq)
        if self._executor is not None:
            self._executor.shutdown(wait=False)


def run_batch(
    model: GPT,
    prompts: Iterable[list[int]],
    params: SamplingParams,
    limits: EngineLimits | None = None,
) -> tuple[list[list[int]], dict]:
    """The bare batched decode loop: every prompt through the same scheduler
    and KV cache, no event loop, no HTTP. (tokens per prompt, stats)."""
    sched = Scheduler(model.eval(), limits or EngineLimits(max_queue=1 << 30))
    outputs: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        out: list[int] = []
        outputs.append(out)
        seq = Sequence(f"batch-{i}", list(prompt), params, _generator(params.seed))
        seq.on_token = lambda token, finish, error, out=out: (
            out.append(token) if token is not None else None
        )
        sched.add(seq)
    while sched.has_work():
        plan = sched.plan()
        sched.apply(plan, sched.compute(plan))
    return outputs, sched.stats()

"""Time the action order of a ``torch.distributed.pipelining`` multi-stage schedule.

The closed form of GPipe/1F1B (``costmodel.predict_pipeline``) does not carry over to the
schedules that hold two stages per rank: their bubble depends on the exact order in which each
rank interleaves forwards, input-gradient backwards (``I``) and weight-gradient backwards
(``W``).  Rather than a formula per paper, this module asks torch for the very order its
runtime executes (``_calculate_single_rank_operations``, computed for every rank from K and M
alone) and replays it: every rank runs its actions in that order; an action starts when its
rank is free and its inputs exist (the previous stage's forward of that micro-batch, the next
stage's input gradient, plus one point-to-point message when the two stages sit on different
ranks).  The makespan is the pipeline's part of the step.

Torch computes these orders in private methods; the project pins torch (2.13), and
``schedule_orders`` returns None (the arm is then not predicted) if a torch release changes
them, rather than guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Actions replayed.  ``B`` is a full backward; ``I`` + ``W`` split it (zero-bubble schedules).
FORWARD, FULL_BACKWARD, INPUT_GRAD, WEIGHT_GRAD = "F", "B", "I", "W"
TORCH_SCHEDULES = {
    "interleaved1f1b": "ScheduleInterleaved1F1B",
    "interleavedzb": "ScheduleInterleavedZeroBubble",
    "zbv": "ScheduleZBVZeroBubble",
    "dualpipev": "ScheduleDualPipeV",
}
V_SHAPED = frozenset({"zbv", "dualpipev"})


@dataclass(frozen=True)
class Action:
    """One compute action: ``kind`` (F, B, I or W) of ``stage`` on micro-batch ``micro``."""

    kind: str
    stage: int
    micro: int


@dataclass(frozen=True)
class StageCosts:
    """Seconds per micro-batch of each of the 2K stages, and the message time of each cut.

    ``send_s[s]`` is one point-to-point message across the cut after stage ``s`` (its output
    forward, or its input gradient backward: the same bytes)."""

    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    send_s: tuple[float, ...]
    input_grad_share: float = 0.5
    """Share of a backward that computes the input gradient (``I``); ``W`` is the rest (used
    when the split is not measured)."""
    input_grad_s: tuple[float, ...] = ()
    weight_grad_s: tuple[float, ...] = ()
    """Measured seconds of each stage's ``I`` and ``W`` passes (``Profile.split``); together
    they cost more than one full backward on a CPU.  Empty: the share above."""
    per_action_s: float = 0.0
    """Seconds every action costs on top of its compute (the pipeline runtime's own work)."""
    send_busy_s: tuple[float, ...] = ()
    """Per cut: seconds a message across it holds its *sender* (gloo on a CPU copies the tensor
    into the socket in the posting thread, on the rank's own core).  Empty: sending is free and
    only delays the receiver (``send_s``)."""


def stage_rank(schedule: str, stage: int, ranks: int) -> int:
    """The rank that holds ``stage`` (of 2K): a loop for interleaved schedules, a V otherwise."""
    if schedule in V_SHAPED:
        return stage if stage < ranks else 2 * ranks - 1 - stage
    return stage % ranks


def schedule_orders(schedule: str, ranks: int, microbatches: int) -> dict[int, list[Action]] | None:
    """Every rank's compute actions, in the order torch's runtime runs them (None: this torch
    does not compute them the way this module reads them)."""
    from torch.distributed.pipelining import schedules

    cls = getattr(schedules, TORCH_SCHEDULES[schedule], None)
    if cls is None:
        return None
    plan = cls.__new__(cls)  # the order needs K and M only, not stages or a process group
    rounds = max(1, microbatches // ranks)
    fields = {
        "pp_group_size": ranks,
        "_n_microbatches": microbatches,
        "n_local_stages": 2,
        "num_stages": 2 * ranks,
        "_num_stages": 2 * ranks,
        "number_of_rounds": rounds,
        "microbatches_per_round": microbatches // rounds,
    }
    for name, value in fields.items():
        setattr(plan, name, value)
    try:
        raw = {rank: plan._calculate_single_rank_operations(rank) for rank in range(ranks)}
    except (AttributeError, TypeError):
        return None
    return {rank: _flatten(actions) for rank, actions in raw.items()}


def _flatten(actions: Sequence[Any]) -> list[Action]:
    """torch ``_Action``s → ``Action``s; an OVERLAP_F_B pair runs its two halves in turn (one
    CPU thread overlaps nothing)."""
    out: list[Action] = []
    for action in actions:
        if action is None:
            continue
        subs = getattr(action, "sub_actions", None)
        if subs:
            out += _flatten(subs)
            continue
        kind = str(action.computation_type.value)
        out.append(Action(kind, int(action.stage_index), int(action.microbatch_index)))
    return out


def makespan(
    orders: Mapping[int, Sequence[Action]],
    costs: StageCosts,
    rank_of: Callable[[int], int],
) -> float:
    """Seconds from the first action to the last, replaying ``orders`` against ``costs``.

    Raises ValueError if the orders deadlock (an action waits for one that never runs)."""
    last_stage = len(costs.forward_s) - 1
    done: dict[tuple[str, int, int], float] = {}
    clock = dict.fromkeys(orders, 0.0)
    position = dict.fromkeys(orders, 0)
    remaining = sum(len(actions) for actions in orders.values())
    while remaining:
        progressed = False
        for rank, actions in orders.items():
            while position[rank] < len(actions):
                action = actions[position[rank]]
                ready = _ready_at(action, done, costs, rank_of, last_stage)
                if ready is None:
                    break
                start = max(clock[rank], ready)
                clock[rank] = start + _duration(action, costs)
                done[(action.kind, action.stage, action.micro)] = clock[rank]
                clock[rank] += _sender_busy(action, costs, rank_of, last_stage)
                position[rank] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            stuck = {r: a[position[r]] for r, a in orders.items() if position[r] < len(a)}
            raise ValueError(f"schedule deadlocks: next actions {stuck}")
    return max(clock.values(), default=0.0)


def _duration(action: Action, costs: StageCosts) -> float:
    return costs.per_action_s + compute_s(action, costs)


def _sender_busy(action: Action, costs: StageCosts, rank_of: Callable[[int], int], last_stage: int) -> float:
    """Seconds ``action``'s outgoing message holds its rank: an activation forward to the next
    stage, or an input gradient back to the previous one, when that stage is on another rank."""
    if not costs.send_busy_s or action.kind == WEIGHT_GRAD:
        return 0.0
    if action.kind == FORWARD:
        peer, cut = action.stage + 1, action.stage
        if action.stage == last_stage:
            return 0.0
    else:
        peer, cut = action.stage - 1, action.stage - 1
        if action.stage == 0:
            return 0.0
    return costs.send_busy_s[cut] if rank_of(peer) != rank_of(action.stage) else 0.0


def compute_s(action: Action, costs: StageCosts) -> float:
    """Seconds of ``action``'s own compute (no runtime cost, no messages)."""
    if action.kind == FORWARD:
        return costs.forward_s[action.stage]
    backward = costs.backward_s[action.stage]
    if action.kind == INPUT_GRAD:
        return costs.input_grad_s[action.stage] if costs.input_grad_s else backward * costs.input_grad_share
    if action.kind == WEIGHT_GRAD:
        if costs.weight_grad_s:
            return costs.weight_grad_s[action.stage]
        return backward * (1.0 - costs.input_grad_share)
    return backward


def _ready_at(
    action: Action,
    done: Mapping[tuple[str, int, int], float],
    costs: StageCosts,
    rank_of: Callable[[int], int],
    last_stage: int,
) -> float | None:
    """When ``action``'s inputs exist on its rank (None: not yet produced)."""
    s, m = action.stage, action.micro

    def arrival(kinds: Sequence[str], stage: int, cut: int) -> float | None:
        ends = [done[(k, stage, m)] for k in kinds if (k, stage, m) in done]
        if not ends:
            return None
        hop = costs.send_s[cut] if rank_of(stage) != rank_of(s) else 0.0
        return min(ends) + hop

    if action.kind == FORWARD:
        return 0.0 if s == 0 else arrival([FORWARD], s - 1, s - 1)
    if action.kind == WEIGHT_GRAD:
        return done.get((INPUT_GRAD, s, m))
    own_forward = done.get((FORWARD, s, m))
    if own_forward is None:
        return None
    if s == last_stage:
        return own_forward
    grad = arrival([FULL_BACKWARD, INPUT_GRAD], s + 1, s)
    return None if grad is None else max(own_forward, grad)

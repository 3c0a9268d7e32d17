"""Rows the journal returns (frozen dataclasses), what callers pass in
(``ItemSpec``), and the small helpers every table part shares.

Stdlib only, Python 3.6+.
"""

import json
import sqlite3
import time
from typing import (Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar,
                    Union)

from .._py36 import dataclasses
from .schema import FINISHED_STATUSES, ITEM_OUTCOMES, TRANSFER_STATUSES



@dataclasses.dataclass(frozen=True)
class JobRow:
    job_id: str
    owner: str
    queue: Optional[str]
    array_parent: Optional[str]
    priority: Optional[int]
    qtime: Optional[float]
    first_seen: Optional[float]
    last_seen: Optional[float]
    gone_since: Optional[float]
    exit_status: Optional[int]
    obit_time: Optional[float]
    stage_state: Optional[str]
    comment: Optional[str]


@dataclasses.dataclass(frozen=True)
class RequestRow:
    request_id: int
    job_id: str
    direction: str
    owner: str
    identity: str
    raw: str
    normalized: str
    request_key: str
    state: str
    message: Optional[str]
    action: Optional[str]
    attempts: int
    next_attempt: Optional[float]
    created: Optional[float]
    updated: Optional[float]


@dataclasses.dataclass(frozen=True)
class TransferRow:
    transfer_id: int
    identity: str
    direction: Optional[str]
    source_collection: Optional[str]
    destination_collection: Optional[str]
    options: Dict[str, Any]          # decoded JSON; {} when none
    label: Optional[str]
    deadline: Optional[str]
    submission_id: Optional[str]
    task_id: Optional[str]
    grafted: bool
    status: str
    nice_status: Optional[str]
    files: Optional[int]
    files_transferred: Optional[int]
    files_skipped: Optional[int]
    bytes_transferred: Optional[int]
    bytes_per_second: Optional[float]
    faults: Optional[int]
    fault_since: Optional[float]
    fatal_code: Optional[str]
    message: Optional[str]
    created: Optional[float]
    submitted: Optional[float]
    completed: Optional[float]
    last_polled: Optional[float]
    last_progress: Optional[float]
    orphaned_since: Optional[float]
    cancel_requested: Optional[float]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclasses.dataclass(frozen=True)
class ItemRow:
    item_id: int
    transfer_id: int
    request_id: Optional[int]
    source_path: str
    destination_path: str
    recursive: bool
    outcome: str
    message: Optional[str]


@dataclasses.dataclass(frozen=True)
class EventRow:
    event_id: int
    time: float
    job_id: Optional[str]
    request_id: Optional[int]
    transfer_id: Optional[int]
    kind: str
    message: Optional[str]
    data: Optional[Any]              # decoded JSON


@dataclasses.dataclass(frozen=True)
class AlertRow:
    rule: str
    key: str
    first_sent: Optional[float]
    last_sent: Optional[float]
    count: int


@dataclasses.dataclass(frozen=True)
class ObitRow:
    job_id: str
    exit_status: Optional[int]
    time: Optional[float]
    owner: Optional[str] = None
    project: Optional[str] = None
    stageout: Optional[str] = None      # the job's stageout_globus as it ended


@dataclasses.dataclass(frozen=True)
class CycleRow:
    cycle_id: int
    started: float
    finished: Optional[float]
    ok: Optional[bool]
    error: Optional[str]
    globus_calls: Optional[int]
    pbs_calls: Optional[int]
    cpu_seconds: Optional[float]
    jobs: Optional[int]
    transfers: Optional[int]


@dataclasses.dataclass(frozen=True)
class ItemSpec:
    """One item to add to a transfer, and the request that needs it (None for
    an item no job asked for, e.g. the items of a grafted task)."""

    request_id: Optional[int]
    source_path: str
    destination_path: str
    recursive: bool = False


_R = TypeVar("_R")


def _decode_json(text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text       # written by hand or by a newer tool: show it, don't crash


_FIELDS: Dict[type, Tuple[str, ...]] = {}


def _row(cls: Type[_R], row: sqlite3.Row) -> _R:
    # dataclasses.fields() is slow enough to matter at 10,000 jobs a cycle.
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    values = {name: row[name] for name in names}
    if cls is TransferRow:
        values["options"] = _decode_json(values["options"]) or {}
        values["grafted"] = bool(values["grafted"])
    elif cls is ItemRow:
        values["recursive"] = bool(values["recursive"])
    elif cls is EventRow:
        values["data"] = _decode_json(values["data"])
    elif cls is CycleRow and values["ok"] is not None:
        values["ok"] = bool(values["ok"])
    return cls(**values)  # type: ignore[call-arg]


def _dumps(value: Any) -> Optional[str]:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _now(now: Optional[float]) -> float:
    return time.time() if now is None else float(now)


def _words(value: Union[None, str, Iterable[str]]) -> Optional[Tuple[str, ...]]:
    """A filter value: one word or several."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _in_clause(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({','.join('?' * len(values))})"



def _or(vocabulary: Iterable[str]) -> str:
    words = [repr(str(w)) for w in vocabulary]
    return " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " or " + words[-1]


def _check_status(status: str) -> None:
    if status not in TRANSFER_STATUSES:
        raise ValueError(f"transfer status must be one of {', '.join(TRANSFER_STATUSES)}, "
                         f"not {status!r}")


def _check_outcome(outcome: str) -> None:
    if outcome not in ITEM_OUTCOMES:
        raise ValueError(f"item outcome must be one of {', '.join(ITEM_OUTCOMES)}, not {outcome!r}")


def _item_spec(item: Union[ItemSpec, Mapping[str, Any]]) -> ItemSpec:
    if isinstance(item, ItemSpec):
        spec = item
    elif isinstance(item, Mapping):
        try:
            spec = ItemSpec(request_id=item.get("request_id"), source_path=item["source_path"],
                            destination_path=item["destination_path"],
                            recursive=bool(item.get("recursive", False)))
        except KeyError as exc:
            raise ValueError(f"a transfer item needs {exc.args[0]}; expected keys request_id, "
                             "source_path, destination_path, recursive") from None
    else:
        raise ValueError(f"a transfer item must be an ItemSpec or a mapping, not {type(item).__name__}")
    if not spec.source_path or not spec.destination_path:
        raise ValueError(f"a transfer item needs both paths, got {spec!r}")
    return spec

"""A stand-in for OpenPBS 23.06's ``pbs`` hook module (server hooks only).

The hook runner (``hookrun``) installs this module as ``sys.modules["pbs"]`` and sets
``_ctx`` before each hook run.  Behaviour follows ``/work/shared/reference/pbs-hook-api.md``;
where OpenPBS is surprising (``hold_types`` has no ``__eq__``, a plain ``str`` is refused for
Hold_Types, ``KeyboardInterrupt`` on alarm) the double is surprising in the same way, so hook
bugs show up here and not on a production server.
"""
from __future__ import annotations

import builtins
import re
import socket

# ---------------------------------------------------------------- constants
QUEUEJOB = 0x01
MODIFYJOB = 0x02
RESVSUB = 0x04
MOVEJOB = 0x08
RUNJOB = 0x10
PROVISION = 0x20
EXECJOB_BEGIN = 0x40
EXECJOB_PROLOGUE = 0x80
EXECJOB_EPILOGUE = 0x100
EXECJOB_END = 0x200
EXECJOB_PRETERM = 0x400
EXECJOB_LAUNCH = 0x800
EXECHOST_PERIODIC = 0x1000
EXECJOB_ATTACH = 0x2000
EXECHOST_STARTUP = 0x4000
PERIODIC = 0x8000
RESV_END = 0x10000
EXECJOB_RESIZE = 0x20000
EXECJOB_ABORT = 0x40000
EXECJOB_POSTSUSPEND = 0x80000
EXECJOB_PRERESUME = 0x100000
MANAGEMENT = 0x200000
MODIFYVNODE = 0x400000
JOBOBIT = 0x800000
RESV_BEGIN = 0x1000000
RESV_CONFIRM = 0x2000000
MODIFYRESV = 0x4000000
POSTQUEUEJOB = 0x8000000
MOM_EVENTS = (EXECJOB_BEGIN | EXECJOB_PROLOGUE | EXECJOB_EPILOGUE | EXECJOB_END
              | EXECJOB_PRETERM | EXECJOB_LAUNCH | EXECHOST_PERIODIC | EXECJOB_ATTACH
              | EXECHOST_STARTUP | EXECJOB_RESIZE | EXECJOB_ABORT | EXECJOB_POSTSUSPEND
              | EXECJOB_PRERESUME)

_EVENT_NAMES = {
    "QUEUEJOB": QUEUEJOB, "MODIFYJOB": MODIFYJOB, "RESVSUB": RESVSUB, "MOVEJOB": MOVEJOB,
    "RUNJOB": RUNJOB, "PROVISION": PROVISION, "EXECJOB_BEGIN": EXECJOB_BEGIN,
    "EXECJOB_PROLOGUE": EXECJOB_PROLOGUE, "EXECJOB_EPILOGUE": EXECJOB_EPILOGUE,
    "EXECJOB_END": EXECJOB_END, "EXECJOB_PRETERM": EXECJOB_PRETERM,
    "EXECJOB_LAUNCH": EXECJOB_LAUNCH, "EXECHOST_PERIODIC": EXECHOST_PERIODIC,
    "EXECJOB_ATTACH": EXECJOB_ATTACH, "EXECHOST_STARTUP": EXECHOST_STARTUP,
    "PERIODIC": PERIODIC, "RESV_END": RESV_END, "EXECJOB_RESIZE": EXECJOB_RESIZE,
    "EXECJOB_ABORT": EXECJOB_ABORT, "EXECJOB_POSTSUSPEND": EXECJOB_POSTSUSPEND,
    "EXECJOB_PRERESUME": EXECJOB_PRERESUME, "MANAGEMENT": MANAGEMENT,
    "MODIFYVNODE": MODIFYVNODE, "JOBOBIT": JOBOBIT, "RESV_BEGIN": RESV_BEGIN,
    "RESV_CONFIRM": RESV_CONFIRM, "MODIFYRESV": MODIFYRESV, "POSTQUEUEJOB": POSTQUEUEJOB,
}
for _n, _v in _EVENT_NAMES.items():
    globals()["HOOK_EVENT_" + _n] = _v

JOB_STATE_TRANSIT = 0
JOB_STATE_QUEUED = 1
JOB_STATE_HELD = 2
JOB_STATE_WAITING = 3
JOB_STATE_RUNNING = 4
JOB_STATE_EXITING = 5
JOB_STATE_EXPIRED = 6
JOB_STATE_BEGUN = 7
JOB_STATE_MOVED = 8
JOB_STATE_FINISHED = 9
JOB_STATE_SUSPEND = 400
JOB_STATE_SUSPEND_USERACTIVE = 410

_STATE_LETTERS = {"T": 0, "Q": 1, "H": 2, "W": 3, "R": 4, "E": 5, "X": 6, "B": 7, "M": 8,
                  "F": 9, "S": 400, "U": 410}

_SUBSTATES = {
    "TRANSIN": 0, "TRANSICM": 1, "TRNOUT": 2, "TRNOUTCM": 3, "QUEUED": 10, "PRESTAGEIN": 11,
    "SYNCRES": 13, "STAGEIN": 14, "STAGEGO": 15, "STAGECMP": 16, "HELD": 20, "SYNCHOLD": 21,
    "DEPNHOLD": 22, "WAITING": 30, "STAGEFAIL": 37, "PRERUN": 41, "RUNNING": 42,
    "SUSPEND": 43, "SCHSUSP": 45, "EXITING": 50, "STAGEOUT": 51, "STAGEDEL": 52,
    "EXITED": 53, "ABORT": 54, "KILLSIS": 56, "RUNEPILOG": 57, "OBIT": 58, "TERM": 59,
    "RERUN": 60, "RERUN1": 61, "RERUN2": 62, "RERUN3": 63, "EXPIRED": 69, "BEGUN": 70,
    "PROVISION": 71, "WAITING_JOIN_JOB": 72, "TERMINATED": 91, "FINISHED": 92,
    "FAILED": 93, "MOVED": 94, "DELJOB": 153,
}
for _n, _v in _SUBSTATES.items():
    globals()["JOB_SUBSTATE_" + _n] = _v

LOG_DEBUG = 5
LOG_WARNING = 6
LOG_ERROR = 7
EVENT_ERROR = 0x1
EVENT_SYSTEM = 0x2
EVENT_ADMIN = 0x4
EVENT_JOB = 0x8
EVENT_JOB_USAGE = 0x10
EVENT_SECURITY = 0x20
EVENT_SCHED = 0x40
EVENT_DEBUG = 0x80
EVENT_DEBUG2 = 0x100
EVENT_RESV = 0x200
EVENT_DEBUG3 = 0x400
EVENT_DEBUG4 = 0x800
EVENT_FORCE = 0x8000

REVERSE_HOOK_EVENT = {v: k for k, v in _EVENT_NAMES.items()}
REVERSE_JOB_STATE = {v: "JOB_STATE_" + k for k, v in {
    "TRANSIT": 0, "QUEUED": 1, "HELD": 2, "WAITING": 3, "RUNNING": 4, "EXITING": 5,
    "EXPIRED": 6, "BEGUN": 7, "MOVED": 8, "FINISHED": 9, "SUSPEND": 400,
    "SUSPEND_USERACTIVE": 410}.items()}
REVERSE_JOB_SUBSTATE = {v: "JOB_SUBSTATE_" + k for k, v in _SUBSTATES.items()}


# ---------------------------------------------------------------- exceptions
class EventIncompatibleError(AttributeError):
    pass


class UnsetAttributeNameError(Exception):
    pass


class BadAttributeValueTypeError(Exception):
    pass


class BadAttributeValueError(Exception):
    pass


class UnsetResourceNameError(Exception):
    pass


class BadResourceValueTypeError(Exception):
    pass


class BadResourceValueError(Exception):
    pass


# ---------------------------------------------------------------- runtime context
class _Context:
    """What the runner knows about the current hook run (one per run)."""

    def __init__(self, *, event: "_event", server: "_server", hook_name: str,
                 hook_config_filename: str | None, pbs_conf: dict, logger,
                 resource_defs: dict, nodename: str) -> None:
        self.event = event
        self.server = server
        self.hook_name = hook_name
        self.hook_config_filename = hook_config_filename
        self.pbs_conf = pbs_conf
        self.logger = logger  # callable(objtype, objname, msg, event_hex)
        self.resource_defs = resource_defs  # lower name -> (name, type, flags)
        self.nodename = nodename
        self.accepted = True  # PBS sets accept before the first hook runs
        self.stopped = False
        self.reject_msg: str | None = None


_ctx: _Context | None = None
hook_config_filename = None
pbs_conf: dict = {}


def _stop_check(name: str, res) -> None:
    if _ctx is not None and _ctx.stopped:
        raise AssertionError(
            "Not permitted to modify attributes (name=%s,res=%s): an event.accept() or "
            "event.reject() already called." % (name, res))


def _event_type() -> int:
    return _ctx.event.type if _ctx is not None else 0


# ---------------------------------------------------------------- value types
def _fmt_err(value, attr: str) -> BadAttributeValueError:
    return BadAttributeValueError("input value %s not of the right format for '%s'"
                                  % (value, attr))


class pbs_int(int):
    pass


class pbs_float(float):
    pass


class pbs_str(str):
    pass


class pbs_bool(int):
    def __new__(cls, value):
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("true", "t", "y", "1"):
                value = True
            elif v in ("false", "f", "n", "0"):
                value = False
            else:
                raise _fmt_err(value, "boolean")
        return int.__new__(cls, bool(value))

    def __str__(self) -> str:
        return "True" if self else "False"

    __repr__ = __str__


class name(str):
    pass


class path(str):
    pass


class project(str):
    pass


class queue_name(str):
    pass


class _generic_attr:
    """Like OpenPBS's: a wrapper with __str__ only -- no __eq__, no __contains__."""
    _derived_types: tuple = (str,)
    _attr_name = "generic"
    _pattern: "re.Pattern | None" = None

    def __init__(self, value) -> None:
        if value is not None and self._pattern is not None:
            if not isinstance(value, (str, _generic_attr)) or \
                    not self._pattern.fullmatch(str(value)):
                raise _fmt_err(value, self._attr_name)
        self._value = value if isinstance(value, (str, _generic_attr)) or value is None \
            else str(value)

    def __str__(self) -> str:
        return str(self._value)

    __repr__ = __str__


class hold_types(_generic_attr):
    _derived_types = (_generic_attr,)
    _attr_name = "Hold_Types"
    _pattern = re.compile(r"[uosnp]+")

    def __add__(self, val) -> "hold_types":
        seen = dict.fromkeys(str(self._value))
        seen.update(dict.fromkeys(str(val)))
        return hold_types("".join(seen))

    def __sub__(self, val) -> "hold_types":
        seen = dict.fromkeys(str(self._value))
        for c in str(val):
            seen.pop(c, None)
        return hold_types("".join(seen) or "n")


class mail_points(_generic_attr):
    _derived_types = (_generic_attr,)
    _attr_name = "Mail_Points"
    _pattern = re.compile(r"[abejstn]+")


class email_list(_generic_attr):
    _derived_types = (_generic_attr,)
    _attr_name = "Mail_Users"
    _pattern = re.compile(r"[^,\s]+(,[^,\s]+)*")


_DEP_TYPES = ("after", "afterok", "afternotok", "afterany", "before", "beforeok",
              "beforenotok", "beforeany", "on", "runone")


class depend(_generic_attr):
    _derived_types = (_generic_attr,)
    _attr_name = "depend"
    _pattern = re.compile(r"(%s):[^,:]+(:[^,:]+)*(,(%s):[^,:]+(:[^,:]+)*)*"
                          % ("|".join(_DEP_TYPES), "|".join(_DEP_TYPES)))


class checkpoint(_generic_attr):
    _attr_name = "Checkpoint"


class join_path(_generic_attr):
    _attr_name = "Join_Path"
    _pattern = re.compile(r"oe|eo|n")


class keep_files(_generic_attr):
    _attr_name = "Keep_Files"


class user_list(_generic_attr):
    _attr_name = "User_List"


class group_list(_generic_attr):
    _attr_name = "group_list"


class job_state(int):
    def __new__(cls, value):
        if isinstance(value, str):
            if value not in _STATE_LETTERS:
                raise _fmt_err(value, "job_state")
            value = _STATE_LETTERS[value]
        return int.__new__(cls, value)


class range(str):  # noqa: A001 -- the pbs module really calls it `range`
    _pattern = re.compile(r"\d+(-\d+(:\d+)?)?")

    def __new__(cls, value):
        if not cls._pattern.fullmatch(str(value)):
            raise _fmt_err(value, "array_indices_submitted")
        return str.__new__(cls, value)


_DUR_RE = re.compile(r"(?:(?:(\d+):)?(\d+):)?(\d+)(?:\.\d+)?")


class duration(int):
    """Seconds; str() gives the text it was made from."""

    def __new__(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _fmt_err(value, "duration")
        if isinstance(value, int):
            obj = int.__new__(cls, value)
            obj._text = str(int(value))
            return obj
        m = _DUR_RE.fullmatch(value.strip())
        if not m:
            raise _fmt_err(value, "duration")
        h, mi, s = (int(x) if x else 0 for x in m.groups())
        obj = int.__new__(cls, h * 3600 + mi * 60 + s)
        obj._text = value
        return obj

    def __str__(self) -> str:
        return self._text

    __repr__ = __str__


_SIZE_RE = re.compile(r"(\d+)([kmgtp]?)(b|w)?", re.I)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


class size:
    """A PBS size: '10gb', '512kb', 1024 (bytes); compares and adds after normalising."""

    def __init__(self, value) -> None:
        if isinstance(value, size):
            self._num, self._unit, self._word = value._num, value._unit, value._word
            return
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _fmt_err(value, "size")
        m = _SIZE_RE.fullmatch(str(value).strip())
        if not m:
            raise _fmt_err(value, "size")
        self._num = int(m.group(1))
        self._unit = m.group(2).lower()
        self._word = (m.group(3) or "b").lower() == "w"

    def _bytes(self) -> int:
        return (self._num << _SIZE_SHIFT[self._unit]) * (8 if self._word else 1)

    def __str__(self) -> str:
        return "%d%s%s" % (self._num, self._unit, "w" if self._word else "b")

    __repr__ = __str__

    def _other(self, other) -> int:
        return size(other)._bytes() if not isinstance(other, size) else other._bytes()

    def _from_bytes(self, n: int) -> "size":
        unit = ""
        for u in ("k", "m", "g", "t", "p"):
            if n and n % (1 << _SIZE_SHIFT[u]) == 0:
                unit = u
        return size("%d%sb" % (n >> _SIZE_SHIFT[unit], unit))

    def __add__(self, other) -> "size":
        return self._from_bytes(self._bytes() + self._other(other))

    def __sub__(self, other) -> "size":
        return self._from_bytes(max(0, self._bytes() - self._other(other)))

    def __eq__(self, other) -> bool:
        try:
            return self._bytes() == self._other(other)
        except BadAttributeValueError:
            return NotImplemented

    def __lt__(self, other) -> bool:
        return self._bytes() < self._other(other)

    def __le__(self, other) -> bool:
        return self._bytes() <= self._other(other)

    def __gt__(self, other) -> bool:
        return self._bytes() > self._other(other)

    def __ge__(self, other) -> bool:
        return self._bytes() >= self._other(other)

    def __hash__(self) -> int:
        return hash(self._bytes())


_CHUNK_RE = re.compile(r"(\d+:)?[A-Za-z][\w-]*=[^:+]+(:[A-Za-z][\w-]*=[^:+]+)*|\d+")


class select(str):
    def __new__(cls, value):
        if not isinstance(value, str) or not all(
                _CHUNK_RE.fullmatch(c) for c in value.split("+")):
            raise _fmt_err(value, "select")
        return str.__new__(cls, value)

    def increment_chunks(self, increment_spec) -> "select":
        """Add nodes to every chunk; the first chunk keeps its one mother-superior node."""
        out = []
        for i, chunk in enumerate(self.split("+")):
            head, sep, rest = chunk.partition(":")
            if head.isdigit():
                count = int(head)
            else:
                count, rest, sep = 1, chunk, ":"
            base = count - 1 if i == 0 else count
            if isinstance(increment_spec, str) and increment_spec.endswith("%"):
                inc = -(-base * int(increment_spec[:-1]) // 100)
            else:
                inc = int(increment_spec)
            new = (1 if i == 0 else 0) + base + inc
            out.append("%d%s%s" % (new, sep, rest) if rest else str(new))
        return select("+".join(out))


class place(str):
    pass


class pbs_env(dict):
    """Variable_List.  PBS-owned names are read-only in site hooks."""
    _readonly_names = ("PBS_ENVIRONMENT", "PBS_JOBDIR", "PBS_JOBID", "PBS_JOBNAME",
                       "PBS_NODEFILE", "TMPDIR", "PBS_O_HOME", "PBS_O_HOST", "PBS_O_LANG",
                       "PBS_O_LOGNAME", "PBS_O_MAIL", "PBS_O_PATH", "PBS_O_QUEUE",
                       "PBS_O_SHELL", "PBS_O_SYSTEM", "PBS_O_TZ", "PBS_O_WORKDIR",
                       "PBS_QUEUE")

    def __init__(self, value=None, generic: bool = False) -> None:
        if isinstance(value, str):
            value = _parse_env_string(value)
        super().__init__(value or {})
        self._generic = generic
        self._owner = None  # the _job this belongs to, set by the job

    def __setitem__(self, key, value) -> None:
        owner = self._owner
        if owner is not None:
            _stop_check("Variable_List", key)
            if owner._readonly:
                raise BadAttributeValueError(
                    "attribute 'Variable_List' is part of a readonly object")
            owner._check_event_may_set("Variable_List")
        if key in self._readonly_names and _ctx is not None and not self._generic:
            raise BadAttributeValueError("env variable '%s' is readonly" % (key,))
        super().__setitem__(key, value)
        if owner is not None:
            owner._changed.setdefault("Variable_List", set()).add(key)


def _parse_env_string(value: str) -> dict:
    out = {}
    for item in re.split(r"(?<!\\),", value):
        if not item:
            continue
        k, _, v = item.partition("=")
        out[k] = v
    return out


# ---------------------------------------------------------------- resources
_BUILTIN_RESOURCES = {
    "walltime": "duration", "cput": "duration", "pcput": "duration",
    "min_walltime": "duration", "max_walltime": "duration", "soft_walltime": "duration",
    "mem": "size", "vmem": "size", "pmem": "size", "pvmem": "size", "file": "size",
    "accelerator_memory": "size",
    "ncpus": "long", "nodect": "long", "mpiprocs": "long", "ompthreads": "long",
    "naccelerators": "long", "cpupercent": "long",
    "select": "select", "place": "place", "schedselect": "string",
    "arch": "string", "host": "string", "vnode": "string", "software": "string",
    "nodes": "string", "site": "string", "preempt_targets": "string",
    "accelerator_model": "string", "accelerator": "boolean",
}


def _resource_types(kind: str) -> tuple:
    return {"duration": (duration,), "size": (size,), "long": (int,), "select": (select,),
            "place": (str,), "string": (str,), "boolean": (bool, int),
            "float": (float, int), "string_array": (str,)}.get(kind, (str,))


def _resource_value(kind: str, raw):
    """Server-side text -> the typed value a hook sees."""
    if raw is None:
        return None
    try:
        if kind == "duration":
            return duration(str(raw))
        if kind == "size":
            return size(str(raw))
        if kind == "long":
            return pbs_int(int(raw))
        if kind == "select":
            return select(str(raw))
        if kind == "place":
            return place(str(raw))
        if kind == "boolean":
            return pbs_bool(raw)
        if kind == "float":
            return pbs_float(float(raw))
    except (ValueError, BadAttributeValueError):
        pass
    return pbs_str(raw)


class pbs_resource:
    """Resource_List / resources_used: case-insensitive names, typed values."""

    def __init__(self, attr_name: str, values: dict | None = None, *, owner=None,
                 defs: dict | None = None) -> None:
        d = self.__dict__
        d["_name"] = attr_name
        d["_owner"] = owner
        d["_defs"] = defs if defs is not None else (
            _ctx.resource_defs if _ctx is not None else _default_defs())
        d["_values"] = {}
        for k, v in (values or {}).items():
            canon, kind = self._lookup(k)
            if canon is None:
                continue  # the server refuses it later; a hook never sees it
            d["_values"][canon.lower()] = (canon, _resource_value(kind, v))

    def _lookup(self, key: str):
        entry = self._defs.get(str(key).lower())
        if entry is None:
            return None, None
        return entry[0], entry[1]

    def __getitem__(self, key):
        canon, _ = self._lookup(key)
        if canon is None:
            raise AttributeError("resource attribute '%s' not found" % (key,))
        entry = self._values.get(canon.lower())
        return entry[1] if entry else None

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return self[key]

    def __setitem__(self, key, value) -> None:
        _stop_check(self._name, key)
        owner = self._owner
        if owner is None or owner._readonly:
            raise BadAttributeValueError(
                "attribute '%s' is part of a readonly object" % (self._name,))
        canon, kind = self._lookup(key)
        if canon is None:
            raise UnsetResourceNameError("resource attribute '%s' not found" % (key,))
        owner._check_event_may_set(self._name)
        if self._name != "Resource_List":
            raise BadAttributeValueError("job attribute '%s' is readonly" % (self._name,))
        if value is not None:
            types = _resource_types(kind)
            if isinstance(value, types):
                pass
            elif isinstance(value, str) and kind in ("duration", "size", "select", "long"):
                # PBS converts a correctly formatted string for built-in typed resources
                try:
                    value = _resource_value(kind, value) if kind != "long" else int(value)
                except ValueError:
                    raise BadResourceValueError(
                        "input value %s not of the right format for '%s'" % (value, canon))
            else:
                raise BadResourceValueTypeError(
                    "value for class <%s> attribute <%s> must be 'None' or '%s'"
                    % (self._name, canon, types))
        self._values[canon.lower()] = (canon, value)
        owner._changed.setdefault(self._name, set()).add(canon)

    __setattr__ = __setitem__

    def keys(self):
        return [c for c, v in self._values.values() if v is not None]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key) -> bool:
        e = self._values.get(str(key).lower())
        return bool(e and e[1] is not None)

    def __str__(self) -> str:
        return ",".join("%s=%s" % (c, v) for c, v in sorted(self._values.values())
                        if v is not None)

    __repr__ = __str__

    def _as_text(self) -> dict:
        """name -> text, None meaning unset (PBS sends None as "")."""
        return {c: (None if v is None else str(v)) for c, v in self._values.values()}


def _default_defs() -> dict:
    return {k: (k, v, "") for k, v in _BUILTIN_RESOURCES.items()}


# ---------------------------------------------------------------- job
# name -> (type tuple accepted on assignment, hook-settable, reader)
def _str_reader(v):
    return pbs_str(v)


def _int_reader(v):
    return pbs_int(int(v))


_S, _I = _str_reader, _int_reader
_JOB_ATTRS: dict = {
    "Job_Name": ((name,), True, name),
    "Job_Owner": ((pbs_str,), False, _S),
    "resources_used": ((pbs_resource,), False, None),
    "job_state": ((job_state,), False, job_state),
    "queue": ((), False, None),
    "server": ((pbs_str,), False, _S),
    "Account_Name": ((str,), True, _S),
    "Checkpoint": ((checkpoint,), True, checkpoint),
    "ctime": ((int,), False, _I),
    "depend": ((depend,), True, depend),
    "Error_Path": ((path,), True, path),
    "exec_host": ((pbs_str,), False, _S),
    "exec_vnode": ((pbs_str,), False, _S),
    "Execution_Time": ((int,), True, _I),
    "Hold_Types": ((hold_types,), True, hold_types),
    "Join_Path": ((join_path,), True, join_path),
    "Keep_Files": ((keep_files,), True, keep_files),
    "Mail_Points": ((mail_points,), True, mail_points),
    "Mail_Users": ((email_list,), True, email_list),
    "mtime": ((int,), False, _I),
    "Output_Path": ((path,), True, path),
    "Priority": ((int,), True, _I),
    "qtime": ((int,), False, _I),
    "Rerunable": ((pbs_bool, bool), True, pbs_bool),
    "Resource_List": ((pbs_resource,), True, None),
    "schedselect": ((pbs_str,), False, _S),
    "stime": ((int,), False, _I),
    "obittime": ((int,), False, _I),
    "session_id": ((int,), False, _I),
    "Shell_Path_List": ((str,), True, _S),
    "jobdir": ((pbs_str,), False, _S),
    "substate": ((int,), False, _I),
    "Variable_List": ((pbs_env,), True, None),
    "euser": ((pbs_str,), False, _S),
    "egroup": ((pbs_str,), False, _S),
    "hashname": ((pbs_str,), False, _S),
    "queue_rank": ((int,), False, _I),
    "queue_type": ((pbs_str,), False, _S),
    "comment": ((str,), True, _S),
    "etime": ((int,), False, _I),
    "run_count": ((int,), True, _I),
    "Stageout_status": ((int,), False, _I),
    "Exit_status": ((int,), False, _I),
    "Submit_arguments": ((str,), True, _S),
    "history_timestamp": ((int,), False, _I),
    "User_List": ((user_list,), True, user_list),
    "group_list": ((group_list,), True, group_list),
    "array": ((pbs_bool, bool), False, pbs_bool),
    "array_id": ((pbs_str,), False, _S),
    "array_index": ((int,), False, _I),
    "array_state_count": ((pbs_str,), False, _S),
    "array_indices_submitted": ((range,), True, range),
    "array_indices_remaining": ((pbs_str,), False, _S),
    "project": ((project,), True, project),
    "run_version": ((int,), False, _I),
    "Submit_Host": ((pbs_str,), False, _S),
    "create_resv_from_job": ((pbs_bool, bool), True, pbs_bool),
    "umask": ((int,), True, _I),
    "stagein": ((str,), True, _S),
    "stageout": ((str,), True, _S),
    "sandbox": ((str,), True, _S),
    "tolerate_node_failures": ((str,), True, _S),
    "max_run_subjobs": ((int,), True, _I),
    "interactive": ((pbs_bool, bool), False, pbs_bool),
    "eligible_time": ((duration,), False, duration),
    "accrue_type": ((int,), False, _I),
}

_RUNJOB_SETTABLE = ("Hold_Types", "Execution_Time", "project", "Error_Path", "Output_Path",
                    "Resource_List", "Variable_List", "depend", "create_resv_from_job")
_RUNJOB_MSG = ("Can only set job's (%s) attribute, or a vnode's (state) attribute under "
               "RUNJOB event - got <%%s>" % "|".join(_RUNJOB_SETTABLE))


class _queue:
    def __init__(self, qname: str, jobs_fn=None) -> None:
        object.__setattr__(self, "name", qname)
        object.__setattr__(self, "_jobs_fn", jobs_fn)

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__

    def __setattr__(self, key, value) -> None:
        raise BadAttributeValueError("attribute '%s' is part of a readonly object" % (key,))

    def job(self, jobid):
        j = _ctx.server.job(jobid) if _ctx is not None else None
        return j if j is not None and str(j.queue) == self.name else None

    def jobs(self):
        if _ctx is None:
            return iter(())
        return (j for j in _ctx.server.jobs() if str(j.queue) == self.name)


class _job:
    """A job as a hook sees it.  `mode` is one of queuejob/modifyjob/runjob/readonly."""

    def __init__(self, jobid: str, attrs: dict, *, mode: str,
                 defs: dict | None = None) -> None:
        d = self.__dict__
        d["id"] = jobid
        d["_mode"] = mode
        d["_readonly"] = mode == "readonly"
        d["_changed"] = {}
        d["_values"] = {}
        d["failed_mom_list"] = []
        d["succeeded_mom_list"] = []
        for key, raw in attrs.items():
            if key not in _JOB_ATTRS:
                continue
            d["_values"][key] = self._typed(key, raw, defs)
        for key in ("Resource_List", "resources_used"):
            if key not in d["_values"]:
                d["_values"][key] = pbs_resource(key, {}, owner=self, defs=defs)
        if "Variable_List" in d["_values"]:
            d["_values"]["Variable_List"]._owner = self

    def _typed(self, key, raw, defs):
        if raw is None:
            return None
        if key in ("Resource_List", "resources_used"):
            return pbs_resource(key, raw, owner=self, defs=defs)
        if key == "Variable_List":
            env = pbs_env(dict(raw))
            return env
        if key == "queue":
            return _queue(raw) if raw != "" else ""
        reader = _JOB_ATTRS[key][2]
        try:
            return reader(raw)
        except (BadAttributeValueError, ValueError):
            return pbs_str(raw)

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        values = self.__dict__["_values"]
        if key in values:
            return values[key]
        if key in _JOB_ATTRS:
            return None
        raise AttributeError("'_job' object has no attribute '%s'" % (key,))

    def __str__(self) -> str:
        return str(self.id)

    __repr__ = __str__

    def _check_event_may_set(self, key: str) -> None:
        if self._mode == "runjob" and key not in _RUNJOB_SETTABLE:
            raise AssertionError(_RUNJOB_MSG % key)

    def __setattr__(self, key, value) -> None:
        if key not in _JOB_ATTRS and key != "id":
            raise UnsetAttributeNameError("job attribute '%s' not found" % (key,))
        _stop_check(key, None)
        if self._readonly:
            raise BadAttributeValueError("attribute '%s' is part of a readonly object" % (key,))
        if key == "Variable_List":
            raise BadAttributeValueError("attribute 'Variable_List' cannot be directly set.")
        if key == "id":
            raise BadAttributeValueError("attribute 'id' is readonly")
        self._check_event_may_set(key)
        if key == "queue":
            if self._mode != "queuejob":
                raise BadAttributeValueError("job attribute 'queue' is readonly")
            if value is not None and not isinstance(value, _queue):
                raise BadAttributeValueTypeError(
                    "value for class <_job> attribute <queue> must be 'None' or "
                    "'(<class 'pbs._queue'>,)'")
        else:
            types, settable, _ = _JOB_ATTRS[key]
            if not settable:
                raise BadAttributeValueError("job attribute '%s' is readonly" % (key,))
            if key in ("Resource_List", "resources_used"):
                raise AssertionError("can't set the head resource '%s' directly " % (key,))
            if value is not None and not isinstance(value, types):
                derived = getattr(types[0], "_derived_types", None)
                if not (derived and isinstance(value, derived)
                        and not isinstance(value, (str, int))):
                    raise BadAttributeValueTypeError(
                        "value for class <_job> attribute <%s> must be 'None' or '%s'"
                        % (key, types))
            if key == "run_count" and value is not None and int(value) < 0:
                raise BadAttributeValueError("run_count value must be >= 0")
            if key == "Execution_Time" and value is not None:
                import time as _time
                if int(value) <= _time.time():
                    raise BadAttributeValueError(
                        "exec_time '%s' not in the future" % (_time.ctime(int(value)),))
        self._values[key] = value
        self._changed[key] = True

    def rerun(self):
        if not (_event_type() & MOM_EVENTS):
            raise NotImplementedError("rerun(): only for mom hooks")

    def delete(self):
        if not (_event_type() & MOM_EVENTS):
            raise NotImplementedError("delete(): only for mom hooks")

    def is_checkpointed(self) -> bool:
        return False

    def in_ms_mom(self) -> bool:
        return False

    def stdout_file(self):
        return None

    def stderr_file(self):
        return None

    def release_nodes(self, node_list=None, keep_select=None):
        return None


# ---------------------------------------------------------------- server
class _server:
    """Read-only view of the server.  `jobs_source` gives {jobid: attrs} on demand."""

    def __init__(self, server_name: str, jobs_source, defs: dict) -> None:
        object.__setattr__(self, "name", server_name)
        object.__setattr__(self, "_jobs_source", jobs_source)
        object.__setattr__(self, "_defs", defs)

    def __setattr__(self, key, value) -> None:
        raise BadAttributeValueError("attribute '%s' is part of a readonly object" % (key,))

    def __str__(self) -> str:
        return self.name

    def job(self, jobid):
        jobid = str(jobid)
        if "." not in jobid:
            jobid = "%s.%s" % (jobid, self.name)
        attrs = self._jobs_source().get(jobid)
        if attrs is None:
            return None
        return _job(jobid, attrs, mode="readonly", defs=self._defs)

    def jobs(self):
        return (_job(jid, a, mode="readonly", defs=self._defs)
                for jid, a in list(self._jobs_source().items()))

    def queue(self, qname: str):
        if "@" in qname:
            raise AssertionError("queue name '%s' must not contain '@'" % (qname,))
        return _queue(qname) if qname == "workq" else None

    def queues(self):
        return iter([_queue("workq")])

    def vnodes(self):
        return iter(())

    def vnode(self, vname):
        return None

    def resvs(self):
        return iter(())

    def resv(self, resvid):
        return None

    def scheduler_restart_cycle(self) -> None:
        pass


# ---------------------------------------------------------------- event
class _event:
    def __init__(self, *, type: int, hook_name: str, requestor, requestor_host,
                 params: dict, freq=None) -> None:
        d = self.__dict__
        d["type"] = type
        d["hook_name"] = hook_name
        d["hook_type"] = "site"
        d["requestor"] = requestor
        d["requestor_host"] = requestor_host
        d["freq"] = freq
        d["_param"] = params

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self.__dict__["_param"][key]
        except KeyError:
            raise EventIncompatibleError('"%s" not found in self._param' % (key,))

    def __setattr__(self, key, value) -> None:
        if key in self._param:
            raise BadAttributeValueError("event attribute '%s' is readonly" % (key,))
        raise BadAttributeValueError("attribute '%s' is part of a readonly object" % (key,))

    def accept(self, ecode=0):
        if _ctx is not None:
            _ctx.accepted = True
            _ctx.reject_msg = None
            _ctx.stopped = True
        raise SystemExit(str(ecode))

    def reject(self, emsg="", ecode=255):
        if _ctx is not None:
            _ctx.accepted = False
            _ctx.reject_msg = str(emsg)[:3171] if emsg else None
            _ctx.stopped = True
        raise SystemExit(str(ecode))


# ---------------------------------------------------------------- functions
def event():
    return _ctx.event if _ctx is not None else None


def server():
    return _ctx.server if _ctx is not None else None


def logmsg(level, msg) -> None:
    if level in (LOG_DEBUG, LOG_WARNING, LOG_ERROR):
        mask = EVENT_ADMIN | EVENT_SYSTEM
    elif isinstance(level, int) and level in (
            EVENT_ERROR, EVENT_SYSTEM, EVENT_ADMIN, EVENT_JOB, EVENT_JOB_USAGE,
            EVENT_SECURITY, EVENT_SCHED, EVENT_DEBUG, EVENT_DEBUG2, EVENT_RESV,
            EVENT_DEBUG3, EVENT_DEBUG4, EVENT_FORCE):
        mask = level
    else:
        raise TypeError("Invalid severity or eventtype value %s" % (level,))
    if _ctx is not None:
        _ctx.logger("Hook", "Server@%s" % _ctx.nodename, str(msg), mask)


def logjobmsg(jobid, msg) -> None:
    if not jobid:
        raise ValueError("no jobid given!")
    if _ctx is not None:
        _ctx.logger("Job", str(jobid), str(msg), EVENT_JOB)


def get_local_nodename() -> str:
    return _ctx.nodename if _ctx is not None else socket.gethostname().split(".")[0]


def reboot(cmd=None):
    if not (_event_type() & MOM_EVENTS):
        raise NotImplementedError("reboot(): only for mom hooks")


def get_pbs_conf() -> dict:
    return dict(pbs_conf)


def in_python_mode() -> bool:
    return False


# keep the builtin reachable for code in this module after `range` was shadowed
_builtin_range = builtins.range

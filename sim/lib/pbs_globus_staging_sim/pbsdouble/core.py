"""Server state shared by every process: a JSON file under PBS_HOME guarded by ``flock``.

Holding the lock plays the part of pbs_server's single thread: while one process handles a
request (event hooks included) every other command waits, so a PBS command run from inside
an event hook blocks until that hook's alarm, as on a real server.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

PBS_VERSION = "23.06.06"

# pbs_errno values; a command exits with errno & 0xff
PBSE_UNKJOBID = 15001
PBSE_NOATTR = 15002
PBSE_ATTRRO = 15003
PBSE_UNKRESC = 15035
PBSE_PERM = 15007
PBSE_BADSTATE = 15016
PBSE_MODATRRUN = 15015
PBSE_BADDEPEND = 15054
PBSE_BADATVAL = 15014
PBSE_UNKQUE = 15018
PBSE_IVALREQ = 15004
PBSE_HISTJOBID = 15139
PBSE_DUPLIST = 15055
PBSE_HOOKERROR = 15136
PBSE_RESCBUSY = 15174

_thread_lock = threading.RLock()

_QSTAT_ORDER = (
    "Job_Name", "Job_Owner", "resources_used", "job_state", "queue", "server",
    "Account_Name", "Checkpoint", "ctime", "depend", "Error_Path", "exec_host", "exec_vnode",
    "Execution_Time", "Hold_Types", "Join_Path", "Keep_Files", "Mail_Points", "Mail_Users",
    "mtime", "Output_Path", "Priority", "qtime", "Rerunable", "Resource_List", "schedselect",
    "stime", "obittime", "session_id", "Shell_Path_List", "jobdir", "substate",
    "Variable_List", "euser", "egroup", "hashname", "queue_rank", "queue_type", "comment",
    "etime", "run_count", "Stageout_status", "Exit_status", "Submit_arguments",
    "history_timestamp", "User_List", "group_list", "array", "array_id", "array_index",
    "array_state_count", "array_indices_submitted", "array_indices_remaining", "umask",
    "stagein", "stageout", "sandbox", "project", "run_version", "Submit_Host",
    "create_resv_from_job",
)
TIME_ATTRS = frozenset(("ctime", "mtime", "qtime", "stime", "obittime", "etime",
                        "Execution_Time"))


class Conf:
    """Where the server lives, as a pbs.conf says."""

    def __init__(self, *, home: Path, exec_dir: Path, server_name: str) -> None:
        self.home = Path(home)
        self.exec_dir = Path(exec_dir)
        self.server_name = server_name

    @classmethod
    def from_env(cls) -> "Conf":
        path = os.environ.get("PBS_CONF_FILE", "/etc/pbs.conf")
        values = {}
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    k, sep, v = line.strip().partition("=")
                    if sep and not k.startswith("#"):
                        values[k.strip()] = v.strip()
        except OSError as exc:
            raise SystemExit("pbsdouble: cannot read pbs.conf %s: %s (set PBS_CONF_FILE)"
                             % (path, exc.strerror))
        for key in ("PBS_HOME", "PBS_EXEC", "PBS_SERVER"):
            if not values.get(key):
                raise SystemExit("pbsdouble: %s has no %s=... line" % (path, key))
        return cls(home=Path(values["PBS_HOME"]), exec_dir=Path(values["PBS_EXEC"]),
                   server_name=values["PBS_SERVER"])

    @property
    def priv(self) -> Path:
        return self.home / "server_priv"

    @property
    def hooks_dir(self) -> Path:
        return self.priv / "hooks"

    def pbs_conf_dict(self) -> dict:
        d = dict.fromkeys(("PBS_HOME", "PBS_EXEC", "PBS_ENVIRONMENT", "PBS_RCP", "PBS_CP",
                           "PBS_SCP", "PBS_SCP_ARGS", "PBS_MOM_HOME", "PBS_TMPDIR",
                           "PBS_SERVER", "PBS_SERVER_HOST_NAME", "PBS_PRIMARY",
                           "PBS_SECONDARY"), "")
        d.update(PBS_HOME=str(self.home), PBS_EXEC=str(self.exec_dir),
                 PBS_ENVIRONMENT=str(self.home / "pbs_environment"),
                 PBS_SERVER=self.server_name, PBS_TMPDIR="/var/tmp", PBS_CP="/bin/cp")
        return d


def empty_state(server_name: str) -> dict:
    return {"server_name": server_name, "next_id": 100, "jobs": {}, "hooks": {},
            "resources": {}, "server": {"job_history_enable": "True"},
            "managers": ["root"]}


@contextmanager
def locked_state(conf: Conf, *, write: bool = True):
    """Yield the state dict under the server lock; save it afterwards when `write`."""
    path = conf.priv / "double_state.json"
    with _thread_lock:
        fd = os.open(str(conf.priv / "double_state.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(path, encoding="utf-8") as fh:
                    state = json.load(fh)
            except FileNotFoundError:
                state = empty_state(conf.server_name)
            yield state
            if write:
                tmp = path.with_name(path.name + ".%d.tmp" % os.getpid())
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump(state, fh)
                os.replace(tmp, path)
        finally:
            os.close(fd)  # closing drops the flock


# ---------------------------------------------------------------- log
def log(conf: Conf, objtype: str, objname: str, msg: str, mask: int = 0x0100) -> None:
    """Append a line in pbs_server's log format to server_logs/YYYYMMDD."""
    now = time.time()
    stamp = time.strftime("%m/%d/%Y %H:%M:%S", time.localtime(now))
    line = "%s.%06d;%04x;Server@%s;%s;%s;%s\n" % (
        stamp, int((now % 1) * 1e6), mask, conf.server_name, objtype, objname,
        msg.replace("\n", " "))
    logdir = conf.home / "server_logs"
    fd = os.open(str(logdir / time.strftime("%Y%m%d", time.localtime(now))),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- jobs
def hold_text(letters: str) -> str:
    """Normalise hold letters the way attr_fn_hold encodes them: s, o, u, p or n."""
    out = "".join(c for c in "soup" if c in letters)
    return out or "n"


def split_id(jobid: str) -> tuple:
    """'114[2].vm' -> ('114', '2', 'vm'); '114[].vm' -> ('114', '', 'vm'); '5' -> ('5', None, '')."""
    base, _, server = jobid.partition(".")
    index = None
    if "[" in base and base.endswith("]"):
        base, _, index = base[:-1].partition("[")
    return base, index, server


def full_id(jobid: str, server_name: str) -> str:
    base, index, server = split_id(jobid)
    if not server or server == server_name:
        server = server_name
    idx = "" if index is None else "[%s]" % index
    return "%s%s.%s" % (base, idx, server)


def find_job(state: dict, jobid: str) -> tuple:
    """Return (full_id, attrs, parent_id) for a job, array parent or subjob, or (id, None, None)."""
    fid = full_id(jobid, state["server_name"])
    jobs = state["jobs"]
    if fid in jobs:
        return fid, jobs[fid], None
    base, index, server = split_id(fid)
    if index is None:
        # '114.vm' names the array '114[].vm' too
        pid = "%s[].%s" % (base, server)
        if pid in jobs:
            return pid, jobs[pid], None
        return fid, None, None
    if index:
        pid = "%s[].%s" % (base, server)
        parent = jobs.get(pid)
        if parent is not None and index.isdigit() and \
                int(index) in expand_range(parent.get("array_indices_submitted", "")):
            return fid, subjob_view(parent, pid, int(index), state["server_name"]), pid
    return fid, None, None


def expand_range(text: str) -> list:
    out = []
    for part in str(text).split(","):
        if not part:
            continue
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        try:
            lo_i = int(lo)
            hi_i = int(hi) if hi else lo_i
            st = int(step) if step else 1
        except ValueError:
            continue
        out.extend(range(lo_i, hi_i + 1, max(st, 1)))
    return out


def compress_range(indices) -> str:
    idx = sorted(indices)
    if not idx:
        return "-"
    parts, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
        if i is not None:
            start = prev = i
    return ",".join(parts)


# observed: subjobs show neither the array_* fields nor project/Submit_Host
_PARENT_ONLY = ("array", "array_state_count", "array_indices_submitted",
                "array_indices_remaining", "project", "Submit_Host")


def subjob_view(parent: dict, parent_id: str, index: int, server_name: str) -> dict:
    """A subjob: instantiated record if it ran, else the parent's attributes, queued."""
    subs = parent.get("_subjobs", {})
    if str(index) in subs:
        return subs[str(index)]
    attrs = {k: v for k, v in parent.items() if k not in _PARENT_ONLY and not k.startswith("_")}
    attrs["job_state"] = "Q"
    attrs["substate"] = 10
    attrs.pop("comment", None)
    attrs["_subjob_of"] = parent_id
    attrs["_index"] = index
    return attrs


def instantiate_subjob(parent: dict, parent_id: str, index: int, server_name: str) -> dict:
    attrs = subjob_view(parent, parent_id, index, server_name)
    attrs = json.loads(json.dumps(attrs))
    attrs["array_id"] = parent_id
    attrs["array_index"] = index
    attrs["_script"] = parent.get("_script")
    parent.setdefault("_subjobs", {})[str(index)] = attrs
    return attrs


def set_state(attrs: dict, letter: str, substate: int) -> None:
    attrs["job_state"] = letter
    attrs["substate"] = substate
    attrs["mtime"] = int(time.time())


def eval_hold_state(attrs: dict) -> None:
    """After a hold change: Q <-> H the way svr_evaljobstate does."""
    holds = attrs.get("Hold_Types", "n")
    if attrs.get("job_state") in ("Q", "H", "W"):
        if holds != "n":
            set_state(attrs, "H", 22 if attrs.get("_dep_wait") and "s" in holds else 20)
        else:
            attrs.pop("_dep_wait", None)
            set_state(attrs, "Q", 10)
            attrs.setdefault("etime", int(time.time()))


def array_counts(parent: dict) -> None:
    subs = parent.get("_subjobs", {})
    submitted = expand_range(parent.get("array_indices_submitted", ""))
    running = sum(1 for s in subs.values() if s["job_state"] == "R")
    exiting = sum(1 for s in subs.values() if s["job_state"] == "E")
    expired = sum(1 for s in subs.values() if s["job_state"] in ("X", "F"))
    queued = len(submitted) - running - exiting - expired
    parent["array_state_count"] = "Queued:%d Running:%d Exiting:%d Expired:%d" % (
        queued, running, exiting, expired)
    parent["array_indices_remaining"] = compress_range(
        [i for i in submitted if str(i) not in subs])


def is_finished(attrs: dict) -> bool:
    return attrs.get("job_state") in ("F", "X")


def owner_of(attrs: dict) -> str:
    return str(attrs.get("Job_Owner", "")).partition("@")[0]


# ---------------------------------------------------------------- qstat rendering
def _reject_constant(name):
    raise ValueError(name)


def _cjson_number(f) -> str:
    if f == int(f) and -2**31 <= f <= 2**31 - 1:
        return "%d" % int(f)
    text = "%1.15g" % f
    if float(text) != f:
        text = "%1.17g" % f
    return text


def _cjson_print(v) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _cjson_number(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v, ensure_ascii=False)


def _jnum(value, *, as_string: bool = False) -> str:
    """qstat -F json runs every value except Job_Name/project/Account_Name through
    cJSON_Parse: text that is valid JSON ("12", "true", "[1]") comes out as that JSON."""
    text = str(value) if not isinstance(value, bool) else ("True" if value else "False")
    if as_string:
        return json.dumps(text, ensure_ascii=False)
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return json.dumps(text, ensure_ascii=False)
    return _cjson_print(parsed)


_JSON_STRING_ATTRS = ("Job_Name", "project", "Account_Name")


def render_attrs(attrs: dict) -> list:
    """Attributes in qstat order as (name, value) with times as ctime strings."""
    out = []
    for key in _QSTAT_ORDER:
        if key not in attrs or attrs[key] is None:
            continue
        val = attrs[key]
        if key in TIME_ATTRS:
            val = time.ctime(int(val))
        elif key == "Resource_List" or key == "resources_used":
            val = {k: val[k] for k in sorted(val) if val[k] is not None}
            if not val:
                continue
        elif key == "Variable_List":
            val = {k: ("" if v is None else str(v)) for k, v in val.items()}
        out.append((key, val))
    return out


def json_document(server_name: str, jobs: list | None) -> str:
    lines = ["{", '\t"timestamp":\t%d,' % int(time.time()),
             '\t"pbs_version":\t"%s",' % PBS_VERSION,
             '\t"pbs_server":\t%s%s' % (json.dumps(server_name), "," if jobs is not None else "")]
    if jobs is not None:
        lines.append('\t"Jobs":\t{')
        for ji, (jid, attrs) in enumerate(jobs):
            lines.append('\t\t%s:\t{' % json.dumps(jid))
            items = render_attrs(attrs)
            for ai, (key, val) in enumerate(items):
                comma = "," if ai < len(items) - 1 else ""
                if isinstance(val, dict):
                    lines.append('\t\t\t"%s":\t{' % key)
                    if key == "Variable_List":  # qstat drops the escape of escaped commas
                        val = {k: v.replace("\\,", ",") for k, v in val.items()}
                    sub = list(val.items())
                    for si, (sk, sv) in enumerate(sub):
                        lines.append('\t\t\t\t%s:\t%s%s' % (json.dumps(sk), _jnum(sv),
                                                          "," if si < len(sub) - 1 else ""))
                    lines.append('\t\t\t}%s' % comma)
                else:
                    lines.append('\t\t\t"%s":\t%s%s' % (
                        key, _jnum(val, as_string=key in _JSON_STRING_ATTRS), comma))
            lines.append('\t\t}%s' % ("," if ji < len(jobs) - 1 else ""))
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def text_full(jid: str, attrs: dict) -> str:
    lines = ["Job Id: %s" % jid]
    for key, val in render_attrs(attrs):
        if isinstance(val, dict) and key == "Variable_List":
            lines.append("    Variable_List = %s" % ",".join(
                "%s=%s" % (k, v) for k, v in val.items()))
        elif isinstance(val, dict):
            for rk, rv in val.items():
                lines.append("    %s.%s = %s" % (key, rk, rv))
        else:
            lines.append("    %s = %s" % (key, val))
    return "\n".join(lines) + "\n\n"

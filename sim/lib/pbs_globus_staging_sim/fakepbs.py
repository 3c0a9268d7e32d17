"""An in-memory PBS for driving the agent at scale (benchmarks, scale tests).

``PbsCommands(pbs_exec="/fake", runner=FakePbs(...))`` sends the agent's
``qstat``/``qalter``/``qrls``/``qhold``/``qdel`` here instead of to
subprocesses.  Creating 10,000 jobs through the PBS double's ``qsub`` costs
~30 ms each; here it costs microseconds, and nothing else changes for the
agent: it parses the same ``qstat -f -F json`` text (shape copied from real
OpenPBS 23.06, ``/work/shared/reference/pbs-samples/qstat_held_job.json``) and
gets the same exit codes and error lines (153 "Unknown Job Id").

Jobs are created as the queuejob hook leaves them: held with ``s``, state
word ``waiting``.  A job released from its last hold goes to ``Q`` and stays
there (nothing is scheduled): the benchmarks only need to know *when* each job
was released, which ``released_at`` records.

The fake's own CPU time is kept in ``cpu_seconds`` (thread time of the calls)
so a benchmark can subtract it: a real PBS answers in another process.
"""
from __future__ import annotations

import collections
import json
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence

# The attributes every job carries, as in qstat_held_job.json (trimmed of the
# ones the agent never reads but kept close enough that JSON size is realistic).
_TIME_FMT = "%a %b %d %H:%M:%S %Y"


def pbs_time(epoch: float) -> str:
    return time.strftime(_TIME_FMT, time.localtime(epoch))


class FakePbs:
    """A ``subprocess.run`` stand-in answering the PBS commands the agent uses."""

    def __init__(self, *, server: str = "fake", clock=time.time) -> None:
        self.server = server
        self.clock = clock
        self.jobs: Dict[str, dict] = {}        # live jobs (qstat without -x)
        self.history: Dict[str, dict] = {}     # deleted jobs (qstat -x)
        self.calls: collections.Counter = collections.Counter()
        self.released_at: Dict[str, float] = {}
        self.cpu_seconds = 0.0
        self._next = 1
        self._lock = threading.Lock()

    # ------------------------------------------------------------ jobs
    def add_job(self, owner: str, *, stagein: Optional[str] = None,
                stageout: Optional[str] = None, priority: int = 0,
                qtime: Optional[float] = None, array: Optional[int] = None,
                queue: str = "workq", name: str = "job.sh") -> str:
        """A job as qsub + the queuejob hook leave it; returns its id.

        ``array=N`` makes an array parent ``ID[]`` with N subjobs (``qstat``
        without ``-t`` shows only the parent, as real PBS does).
        """
        with self._lock:
            seq = self._next
            self._next += 1
        job_id = f"{seq}[].{self.server}" if array else f"{seq}.{self.server}"
        when = pbs_time(self.clock() if qtime is None else qtime)
        res: Dict[str, object] = {"ncpus": 1, "nodect": 1, "place": "pack",
                                  "select": "1:ncpus=1"}
        if stagein is not None:
            res["stagein_globus"] = stagein
        if stageout is not None:
            res["stageout_globus"] = stageout
        held = stagein is not None
        if held:
            res["globus_stage_state"] = "waiting"
        attrs: Dict[str, object] = {
            "Job_Name": name, "Job_Owner": f"{owner}@localhost",
            "job_state": "H" if held else "Q", "queue": queue, "server": self.server,
            "Checkpoint": "u", "ctime": when,
            "Error_Path": f"localhost:/home/{owner}/{name}.e{seq}",
            "Hold_Types": "s" if held else "n", "Join_Path": "n", "Keep_Files": "n",
            "Mail_Points": "a", "mtime": when,
            "Output_Path": f"localhost:/home/{owner}/{name}.o{seq}", "Priority": int(priority),
            "qtime": when, "Rerunable": "True", "Resource_List": res,
            "schedselect": "1:ncpus=1", "substate": 20 if held else 10,
            "Variable_List": {"PBS_O_HOME": f"/home/{owner}", "PBS_O_LOGNAME": owner,
                              "PBS_O_WORKDIR": f"/home/{owner}", "PBS_O_QUEUE": queue,
                              "PBS_O_HOST": "localhost"},
            "euser": owner, "egroup": owner, "queue_rank": seq, "queue_type": "E",
            "Submit_arguments": f"-l stagein_globus=... {name}",
            "project": "_pbs_project_default", "Submit_Host": "localhost",
        }
        if array:
            attrs.update({"array": "True", "array_indices_submitted": f"0-{array - 1}",
                          "array_indices_remaining": f"0-{array - 1}",
                          "array_state_count": f"Queued:{array} Running:0 Exiting:0 Expired:0"})
        self.jobs[job_id] = attrs
        return job_id

    def start_job(self, job_id: str) -> None:
        """What the scheduler does to a runnable job: it is now running."""
        with self._lock:
            job = self.jobs[job_id]
            if str(job["Hold_Types"]) not in ("n", ""):
                raise AssertionError(f"{job_id} is held ({job['Hold_Types']}); cannot start it")
            job["job_state"] = "R"
            job["substate"] = 42

    def state_word(self, job_id: str) -> str:
        job = self.jobs.get(job_id) or self.history.get(job_id) or {}
        return str((job.get("Resource_List") or {}).get("globus_stage_state") or "")

    def holds(self, job_id: str) -> str:
        return str((self.jobs.get(job_id) or {}).get("Hold_Types") or "")

    # ------------------------------------------------------------ runner
    def __call__(self, cmd: Sequence[str], **_kwargs: object) -> subprocess.CompletedProcess:
        t0 = time.thread_time()
        try:
            name = str(cmd[0]).rsplit("/", 1)[-1]
            args = [str(a) for a in cmd[1:]]
            self.calls[name] += 1
            handler = getattr(self, "_" + name, None)
            if handler is None:
                return self._done(cmd, 1, err=f"{name}: not supported by the fake PBS")
            with self._lock:
                return handler(cmd, args)
        finally:
            self.cpu_seconds += time.thread_time() - t0

    @staticmethod
    def _done(cmd, rc: int = 0, out: str = "", err: str = "") -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(list(cmd), rc, out, err)

    def _unknown(self, cmd, name: str, job_id: str) -> subprocess.CompletedProcess:
        return self._done(cmd, 153, err=f"{name}: Unknown Job Id {job_id}\n")

    def _header(self) -> Dict[str, object]:
        return {"timestamp": int(self.clock()), "pbs_version": "23.06.06",
                "pbs_server": self.server}

    def _qstat(self, cmd, args: List[str]) -> subprocess.CompletedProcess:
        history = "-x" in args
        ids = [a for a in args if not a.startswith("-") and a not in ("json",)]
        if not ids:
            doc = self._header()
            if self.jobs:
                doc["Jobs"] = self.jobs
            # No indent: the C encoder, ~10x faster than the tab-indented
            # text PBS prints; the agent's JSON parser cannot tell the difference.
            return self._done(cmd, 0, json.dumps(doc))
        job_id = ids[0]   # real PBS prints only the first id with -F json
        job = self.jobs.get(job_id) or (self.history.get(job_id) if history else None)
        if job is None:
            return self._done(cmd, 153, json.dumps(self._header()),
                              f"qstat: Unknown Job Id {job_id}\n")
        doc = self._header()
        doc["Jobs"] = {job_id: job}
        return self._done(cmd, 0, json.dumps(doc, indent="\t"))

    def _qalter(self, cmd, args: List[str]) -> subprocess.CompletedProcess:
        job_id = args[-1]
        job = self.jobs.get(job_id)
        if job is None:
            return self._unknown(cmd, "qalter", job_id)
        it = iter(args[:-1])
        for opt in it:
            val = next(it, "")
            if opt == "-l":
                key, _, value = val.partition("=")
                job["Resource_List"][key] = value
            elif opt == "-W" and val.startswith("comment="):
                job["comment"] = val[len("comment="):]
            else:
                return self._done(cmd, 2, err=f"qalter: option {opt} not supported by the fake\n")
        return self._done(cmd)

    def _qrls(self, cmd, args: List[str]) -> subprocess.CompletedProcess:
        job_id = args[-1]
        job = self.jobs.get(job_id)
        if job is None:
            return self._unknown(cmd, "qrls", job_id)
        letters = args[args.index("-h") + 1] if "-h" in args else "u"
        holds = "".join(h for h in str(job["Hold_Types"]).replace("n", "") if h not in letters)
        job["Hold_Types"] = holds or "n"
        if not holds and job["job_state"] == "H":
            job["job_state"] = "Q"
            job["substate"] = 10
            self.released_at.setdefault(job_id, time.monotonic())
        return self._done(cmd)

    def _qhold(self, cmd, args: List[str]) -> subprocess.CompletedProcess:
        job_id = args[-1]
        job = self.jobs.get(job_id)
        if job is None:
            return self._unknown(cmd, "qhold", job_id)
        letters = args[args.index("-h") + 1] if "-h" in args else "u"
        holds = str(job["Hold_Types"]).replace("n", "")
        job["Hold_Types"] = holds + "".join(h for h in letters if h not in holds)
        if job["job_state"] == "Q":
            job["job_state"] = "H"
        return self._done(cmd)

    def _qdel(self, cmd, args: List[str]) -> subprocess.CompletedProcess:
        job_id = args[-1]
        job = self.jobs.pop(job_id, None)
        if job is None:
            return self._unknown(cmd, "qdel", job_id)
        job["job_state"] = "F"
        job["substate"] = 91
        self.history[job_id] = job
        return self._done(cmd)

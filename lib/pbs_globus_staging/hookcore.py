"""What each PBS event hook decides, as plain functions of plain values.

Stdlib only: this runs inside ``pbs_server`` (queuejob, modifyjob, runjob,
jobobit) on the Python PBS embeds, 3.6 or newer.  No network, no PBS commands, no
``pbs`` import: the hook scripts in ``data/hooks/`` read the event, call one function
here and apply the answer, so every rule below is a fast unit test.
"""

from ._py36 import dataclasses
import json
import os
import time
from typing import Dict, Mapping, Optional, Tuple

from . import states
from .states import Direction, Stage
from .errors import ConfigError, RequestError, StagingError

# What a user sees when the site's hook config is missing or broken: their
# staged job is refused (never accepted without a guard), unstaged jobs pass.
NOT_CONFIGURED = ("staging is unavailable: the site's Globus staging hooks are not "
                  "configured ({why}); please tell your PBS administrator")


@dataclasses.dataclass(frozen=True)
class HookConfig:
    """The hooks' ``.CF`` file: JSON written by ``install/`` from the site YAML."""

    package_path: str
    site: object            # siteconfig.SiteConfig
    journal: str
    raw: Mapping[str, object]


_CACHE: Dict[str, Tuple[float, int, HookConfig]] = {}


def load_config(path: Optional[str]) -> HookConfig:
    """Read and validate the hook config, cached per (mtime, size).

    The interpreter inside pbs_server persists between hook runs, so the cache
    makes the steady-state cost one ``stat``.
    """
    if not path:
        raise ConfigError("no hook config file was imported")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    hit = _CACHE.get(path)
    if hit and hit[0] == st.st_mtime and hit[1] == st.st_size:
        return hit[2]
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{os.path.basename(path)} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{os.path.basename(path)} must hold a JSON object")
    from . import siteconfig
    try:
        site = siteconfig.from_hook_config(raw.get("site") or {})
    except ConfigError:
        raise
    except Exception as exc:  # a hand-edited file must not crash pbs_server
        raise ConfigError(f"{os.path.basename(path)}: site: {exc}") from None
    cfg = HookConfig(package_path=str(raw.get("package_path") or ""), site=site,
                     journal=str(raw.get("journal") or ""), raw=raw)
    _CACHE[path] = (st.st_mtime, st.st_size, cfg)
    return cfg


@dataclasses.dataclass(frozen=True)
class Answer:
    """A hook's verdict.  ``reject`` set means refuse with that one line."""

    reject: Optional[str] = None
    add_system_hold: bool = False
    resources: Mapping[str, Optional[str]] = dataclasses.field(default_factory=dict)
    comment: Optional[str] = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


ACCEPT = Answer()


def _owner_uid(user: str) -> Optional[int]:
    try:
        import pwd
        return pwd.getpwnam(user).pw_uid
    except (KeyError, ImportError):
        return None


def validate(value: str, *, direction: str, user: str, site: object,
             resource: str, project: Optional[str] = None) -> object:
    """Parse, expand manifests and check a request against the site policy.

    Returns the resolved request; raises ``RequestError`` with the one-line
    message the user will see.
    """
    from . import policy, request
    limits = getattr(site, "limits", None)
    req = request.parse(value, direction=direction, resource=resource,
                        max_length=getattr(limits, "max_value_length", request.MAX_VALUE_LENGTH),
                        max_items=getattr(limits, "max_items", request.MAX_ITEMS))
    if req.manifests:
        uid = _owner_uid(user)
        if uid is None:
            raise RequestError(f"cannot check manifest ownership: unknown user '{user}'",
                               resource=resource)
        req = request.expand_manifests(
            req, owner_uid=uid, resource=resource,
            max_bytes=getattr(limits, "manifest_max_bytes",
                              request.MANIFEST_MAX_BYTES),
            max_items=getattr(limits, "manifest_max_items",
                              request.MANIFEST_MAX_ITEMS))
    try:
        return policy.check(req, user=user, cfg=site, project=project)
    except RequestError as exc:
        if exc.resource is None and not str(exc).startswith(resource):
            raise RequestError(str(exc), resource=resource) from None
        raise


def _check_both(stagein: Optional[str], stageout: Optional[str], *, user: str,
                site: object, project: Optional[str] = None) -> Optional[str]:
    for value, direction, res in ((stagein, Direction.IN, states.RES_STAGEIN),
                                  (stageout, Direction.OUT, states.RES_STAGEOUT)):
        if value is None:
            continue
        try:
            validate(str(value), direction=direction, user=user, site=site, resource=res,
                     project=project)
        except RequestError as exc:
            return str(exc)
        except StagingError as exc:
            return f"{res}: {exc}"
    return None


def queuejob(*, stagein: Optional[str], stageout: Optional[str], user: str,
             config: Optional[HookConfig], config_error: Optional[str] = None,
             project: Optional[str] = None) -> Answer:
    """qsub: refuse a bad request; hold a good stage-in until its data are there."""
    if stagein is None and stageout is None:
        return ACCEPT
    if config is None:
        res = states.RES_STAGEIN if stagein is not None else states.RES_STAGEOUT
        return Answer(reject=f"{res}: " + NOT_CONFIGURED.format(why=config_error or "no config"))
    problem = _check_both(stagein, stageout, user=user, site=config.site, project=project)
    if problem:
        return Answer(reject=problem)
    if stagein is None:
        return ACCEPT  # stage-out only: nothing to wait for before the run
    return Answer(add_system_hold=True,
                  resources={states.RES_STATE: Stage.WAITING.value},
                  comment="staging: waiting for the Globus stage-in to start")


def modifyjob(*, new_stagein: Optional[str], new_stageout: Optional[str],
              state: Optional[str], job_state: Optional[str], owner: str,
              had_stagein: bool, config: Optional[HookConfig],
              config_error: Optional[str] = None, project: Optional[str] = None) -> Answer:
    """qalter of a staging resource: re-validate before staging starts, refuse after.

    ``job_state`` is the PBS state letter of the original job.
    """
    if new_stagein is None and new_stageout is None:
        return ACCEPT  # e.g. the agent's own qalter of globus_stage_state
    if config is None:
        return Answer(reject=NOT_CONFIGURED.format(why=config_error or "no config"))
    if job_state in ("R", "E", "F", "X", "B") and new_stagein is not None:
        return Answer(reject=f"{states.RES_STAGEIN}: the job has already started; "
                             "a stage-in can only be changed before staging begins")
    if new_stagein is not None:
        if str(new_stagein).strip() == "":
            return Answer(reject=f"{states.RES_STAGEIN}: a request cannot be removed with qalter; "
                                 "qdel the job and submit it again without it")
        if (state or "") not in states.EDITABLE:
            return Answer(reject=f"{states.RES_STAGEIN}: cannot be changed once staging has "
                                 f"started (state {state}); qdel the job and submit it again")
    if new_stageout is not None:
        if str(new_stageout).strip() == "":
            return Answer(reject=f"{states.RES_STAGEOUT}: a request cannot be removed with qalter; "
                                 "qdel the job and submit it again without it")
        if (state or "") in (Stage.STAGEOUT_PENDING, Stage.STAGING_OUT, Stage.STAGED_OUT,
                             Stage.STAGEOUT_FAILED, Stage.STAGEOUT_SKIPPED) \
                or job_state in ("E", "F", "X"):
            return Answer(reject=f"{states.RES_STAGEOUT}: cannot be changed once the job has "
                                 "ended and its stage-out is under way")
    problem = _check_both(new_stagein, new_stageout, user=owner, site=config.site,
                          project=project)
    if problem:
        return Answer(reject=problem)
    if new_stagein is not None and not had_stagein:
        return Answer(add_system_hold=True, resources={states.RES_STATE: Stage.WAITING.value},
                      comment="staging: waiting for the Globus stage-in to start")
    return ACCEPT


def runjob(*, stagein: Optional[str], state: Optional[str], tasks: Optional[str],
           parent_state: Optional[str] = None) -> Answer:
    """The guard: a job whose stage-in has not succeeded never starts.

    On accept, tell the job where its data came from through its environment
    (Slurm's burst-buffer ``paths`` does the same).
    """
    if stagein is None:
        return ACCEPT
    effective = state if state in states.RUNNABLE else parent_state
    if effective not in states.RUNNABLE:
        shown = state or "unknown"
        return Answer(reject=f"{states.RES_STAGEIN}: stage-in not complete (state {shown}); "
                             "the job stays held until its data are in place",
                      add_system_hold=True)
    env = {"GLOBUS_STAGEIN_STATE": Stage.STAGED_IN.value}
    if tasks:
        env["GLOBUS_STAGEIN_TASKS"] = ":".join(t for t in str(tasks).split("+") if t)
    paths = _local_paths(str(stagein))
    if paths:
        env["GLOBUS_STAGEIN_PATHS"] = ":".join(paths)
    return Answer(env=env)


def _local_paths(value: str) -> Tuple[str, ...]:
    try:
        from . import request
        req = request.parse(value, direction=Direction.IN)
    except (RequestError, ImportError):
        return ()
    seen = []
    for item in req.items:
        if item.local not in seen:
            seen.append(item.local)
    return tuple(seen)


def jobobit(*, job_id, exit_status, has_request, config, now=None, stageout=None,
            owner=None, project=None):
    """Record the exit status the stage-out decision needs, and with it the
    stage-out request itself (owner, project, ``stageout_globus`` as the job
    ended), in one durable transaction: the agent needs to have seen nothing
    of the job before -- a job shorter than the agent's reaction time still
    has its results sent, across an agent crash or a server restart.  Then
    wake the agent.

    Returns a log line for a failure (the agent falls back to ``qstat -x``),
    ``None`` on success.  The journal is opened with a short timeout: this
    runs inside pbs_server and must never stall it.
    """
    if not has_request or config is None or not config.journal:
        return None
    try:
        from .journal import Journal
        journal = Journal.open(config.journal, timeout=0.5)
        try:
            journal.record_obit(job_id, -1 if exit_status is None else int(exit_status),
                                at=now if now is not None else time.time(),
                                owner=owner or None, project=project or None,
                                stageout=None if stageout is None else str(stageout))
        finally:
            journal.close()
    except Exception as exc:  # never let a journal problem reach pbs_server
        return "could not record exit status of %s in the journal: %s" % (job_id, exc)
    finally:
        wake_agent(config.journal)
    return None


WAKE_NAME = "agent.wake"


def wake_path(journal_path):
    """The serving agent's wake-up FIFO, beside the journal."""
    return os.path.join(os.path.dirname(str(journal_path)), WAKE_NAME)


def wake_agent(journal_path):
    """Tell a serving agent to look now (qsub, job end): one byte into its
    FIFO, never blocking -- no reader (no agent serving) or a full pipe
    (already woken) is fine, the agent's own schedule covers it.  File I/O
    only: no PBS command, no network, so safe inside pbs_server."""
    if not journal_path:
        return
    try:
        fd = os.open(wake_path(journal_path), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return          # ENXIO: nobody listening; ENOENT: no serving agent set up
    try:
        os.write(fd, b"!")
    except OSError:
        pass            # EAGAIN: the pipe is full, the agent has enough to wake for
    finally:
        os.close(fd)


# pbs.JOB_STATE_* values (pbs-hook-api.md section 1) to qstat's letters.
_STATE_LETTERS = {0: "T", 1: "Q", 2: "H", 3: "W", 4: "R", 5: "E", 6: "X", 7: "B", 8: "M",
                  9: "F", 400: "S", 410: "U"}


def state_letter(job_state: object) -> Optional[str]:
    if job_state is None:
        return None
    try:
        return _STATE_LETTERS.get(int(job_state))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def merged_holds(current: Optional[str], add: str = "s") -> str:
    """Hold letters with ``add`` included, in PBS's own order (s, o, u, p)."""
    letters = set(str(current or "").replace("n", "")) | set(add)
    return "".join(c for c in "soup" if c in letters)

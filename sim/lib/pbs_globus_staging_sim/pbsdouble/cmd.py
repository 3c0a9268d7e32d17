"""The PBS client commands of the double: ``python -m ...pbsdouble.cmd NAME ARGS``.

The server is found through ``PBS_CONF_FILE`` like real PBS; the caller is ``PBS_DOUBLE_USER``
(default: the real user; ``root`` is a manager).  Imports are kept small: a command should
start in a few tens of milliseconds.
"""
from __future__ import annotations

import getopt
import os
import sys

from . import core
from .ops import PbsError, Requestor


def _requestor() -> Requestor:
    user = os.environ.get("PBS_DOUBLE_USER")
    if not user:
        import pwd
        user = pwd.getpwuid(os.getuid()).pw_name
    return Requestor(user, "localhost")

def _each_job(ids: list, action) -> int:
    """Apply ``action`` to every job id as PBS commands do: report each failure
    on its own line and exit with the last failure's code."""
    rc = 0
    for jid in ids:
        try:
            action(jid)
        except PbsError as exc:
            _err(exc.message)
            rc = exc.exit_code
    return rc



def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def split_pbs_list(text: str, *, allow_space: bool = False) -> list:
    """Split on commas outside quotes, dropping the quotes (pbs_quote_parse).

    Raises ValueError on unquoted whitespace (unless `allow_space`, as -W values may hold
    it) or an unbalanced quote."""
    items, cur, quote, had = [], [], None, False
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur.append(ch)
        elif ch in "\"'":
            quote = ch
            had = True
        elif ch == ",":
            items.append("".join(cur))
            cur, had = [], False
        elif ch.isspace() and not allow_space:
            raise ValueError("whitespace")
        else:
            cur.append(ch)
    if quote:
        raise ValueError("quote")
    items.append("".join(cur))
    return [i for i in items if i != "" or had]


# ---------------------------------------------------------------- qsub
_QSUB_OPTS = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:P:q:r:S:u:v:VW:zX"
_W_KNOWN = ("depend", "group_list", "stagein", "stageout", "umask", "sandbox", "block",
            "run_count", "tolerate_node_failures", "max_run_subjobs", "create_resv_from_job",
            "release_nodes_on_stageout", "pwd", "cred", "comment")


def _directive_opts(script: str) -> list:
    import shlex
    out = []
    for n, line in enumerate(script.splitlines()):
        s = line.strip()
        if n == 0 and s.startswith("#!"):
            continue
        if s.startswith("#PBS"):
            out.extend(shlex.split(s[4:], comments=False))
        elif not s or s.startswith("#"):
            continue
        else:
            break
    return out


def _abs_path(value: str, cwd: str) -> str:
    host, sep, path = value.rpartition(":")
    if not sep:
        host, path = "localhost", value
    if not path.startswith("/"):
        path = os.path.join(cwd, path)
    return "%s:%s" % (host or "localhost", path)


def qsub(argv: list) -> int:
    req = _requestor()
    try:
        opts, rest = getopt.getopt(argv, _QSUB_OPTS)
    except getopt.GetoptError as exc:
        _err("qsub: %s\nusage: qsub [-a date_time] [-A account_string] ... [script | -- "
             "command [arg1 ...]]" % exc)
        return 2
    if rest:
        path = rest[0]
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                script = fh.read()
        except OSError:
            _err("qsub: script file:: No such file or directory")
            return 2
        default_name = os.path.basename(path)
    else:
        script = sys.stdin.read()
        default_name = "STDIN"
    try:
        dopts, _ = getopt.getopt(_directive_opts(script), _QSUB_OPTS)
    except getopt.GetoptError as exc:
        _err("qsub: directive error: %s" % exc)
        return 2
    cwd = os.getcwd()
    env = os.environ
    vl = {"PBS_O_HOME": env.get("HOME", "/"), "PBS_O_LOGNAME": req.user,
          "PBS_O_PATH": env.get("PATH", ""),
          "PBS_O_MAIL": env.get("MAIL", "/var/mail/%s" % req.user),
          "PBS_O_SHELL": env.get("SHELL", "/bin/sh"),
          "PBS_O_WORKDIR": cwd, "PBS_O_SYSTEM": "Linux", "PBS_O_QUEUE": "workq",
          "PBS_O_HOST": req.host}
    sent: dict = {"Job_Name": default_name, "Resource_List": {}}
    unknown_res: dict = {}
    for opt, val in dopts + opts:
        if opt == "-l":
            try:
                items = split_pbs_list(val)
            except ValueError:
                _err("qsub: illegal -l value")
                return 2
            for item in items:
                k, sep, v = item.partition("=")
                if not k:
                    _err("qsub: illegal -l value")
                    return 2
                sent["Resource_List"][k] = v
        elif opt == "-h":
            sent["Hold_Types"] = "u"
        elif opt == "-N":
            sent["Job_Name"] = val
        elif opt == "-q":
            sent["queue"] = val.split("@")[0]
        elif opt == "-J":
            if not __import__("re").fullmatch(r"\d+-\d+(:\d+)?", val):
                _err("qsub: illegal -J value")
                return 2
            sent["array_indices_submitted"] = val
        elif opt == "-M":
            sent["Mail_Users"] = val
        elif opt == "-m":
            sent["Mail_Points"] = val
        elif opt == "-o":
            sent["Output_Path"] = _abs_path(val, cwd)
        elif opt == "-e":
            sent["Error_Path"] = _abs_path(val, cwd)
        elif opt == "-j":
            sent["Join_Path"] = val
        elif opt == "-k":
            sent["Keep_Files"] = val
        elif opt == "-A":
            sent["Account_Name"] = val
        elif opt == "-P":
            sent["project"] = val
        elif opt == "-p":
            sent["Priority"] = int(val)
        elif opt == "-r":
            sent["Rerunable"] = "True" if val.lower().startswith("y") else "False"
        elif opt == "-a":
            import time
            try:
                sent["Execution_Time"] = int(time.mktime(time.strptime(val, "%Y%m%d%H%M")))
            except ValueError:
                _err("qsub: illegal -a value")
                return 2
        elif opt == "-V":
            for k, v in env.items():
                if not k.startswith("PBS_O_"):
                    vl.setdefault(k, v.replace(",", "\\,"))
        elif opt == "-v":
            try:
                items = split_pbs_list(val)
            except ValueError:
                _err("qsub: illegal -v value")
                return 2
            for item in items:
                k, sep, v = item.partition("=")
                vl[k] = (v if sep else env.get(k, "")).replace(",", "\\,")
        elif opt == "-W":
            try:
                items = split_pbs_list(val, allow_space=True)
            except ValueError:
                _err("qsub: illegal -W value")
                return 2
            for item in items:
                k, _, v = item.partition("=")
                if k not in _W_KNOWN:
                    _err("qsub: Error (15002) submitting job")
                    return 154
                sent[k] = v
        # -f, -z, -I, -X, -c, -C, -S, -u are accepted and have no effect here
    sent["Variable_List"] = vl
    sent["Submit_arguments"] = " ".join(argv)
    from . import ops
    try:
        jid = ops.submit(core.Conf.from_env(), req, sent, script=script,
                         unknown_resources=unknown_res)
    except PbsError as exc:
        _err(exc.message)
        return exc.exit_code
    if "-z" not in [o for o, _ in opts]:
        sys.stdout.write(jid + "\n")
    return 0


# ---------------------------------------------------------------- qstat
def qstat(argv: list) -> int:
    req = _requestor()
    try:
        opts, ids = getopt.getopt(argv, "fF:xtHJswu:a1nQB")
    except getopt.GetoptError as exc:
        _err("qstat: %s" % exc)
        return 2
    o = dict(opts)
    full = "-f" in o
    fmt = o.get("-F", "")
    history = "-x" in o or "-H" in o
    subjobs = "-t" in o
    conf = core.Conf.from_env()
    rc = 0
    out = sys.stdout
    with core.locked_state(conf, write=False) as state:
        mgr = req.is_manager(state)
        sname = state["server_name"]
        if fmt == "json" and ids:
            ids = ids[:1]  # observed: -F json prints only the first id given
        selected = []
        if ids:
            for i in ids:
                fid, attrs, parent = core.find_job(state, i)
                if attrs is None:
                    _err("qstat: Unknown Job Id %s" % fid)
                    rc = 153
                    continue
                if not mgr and core.owner_of(attrs) != req.user:
                    _err("qstat: Unauthorized Request  %s" % fid)
                    rc = 159
                    continue
                if core.is_finished(attrs) and not history:
                    _err("qstat: %s Job has finished, use -x or -H to obtain historical job "
                         "information" % fid)
                    rc = 35
                    continue
                selected.append((fid, attrs))
                if subjobs and fid.endswith("[]." + sname) or (subjobs and "[]" in fid):
                    selected.extend(_subjobs_of(state, fid, attrs))
        else:
            for jid, attrs in state["jobs"].items():
                if core.is_finished(attrs) and not history:
                    continue
                if not mgr and core.owner_of(attrs) != req.user:
                    continue
                selected.append((jid, attrs))
                if subjobs and attrs.get("array_indices_submitted"):
                    selected.extend(_subjobs_of(state, jid, attrs))
        if fmt == "json":
            out.write(core.json_document(sname, selected if selected or not ids else None))
        elif full:
            for jid, attrs in selected:
                out.write(core.text_full(jid, attrs))
        elif selected:
            out.write("Job id            Name             User              Time Use S Queue\n"
                      "----------------  ---------------- ----------------  -------- - -----\n")
            for jid, attrs in selected:
                used = attrs.get("resources_used", {}).get("cput", "0")
                out.write("%-17.17s %-16.16s %-16.16s %8.8s %s %-5.5s\n" % (
                    jid, attrs.get("Job_Name", ""), core.owner_of(attrs), used,
                    attrs.get("job_state", "?"), "workq"))
    return rc


def _subjobs_of(state: dict, pid: str, parent: dict) -> list:
    base, _, server = core.split_id(pid)
    out = []
    for idx in core.expand_range(parent.get("array_indices_submitted", "")):
        sid = "%s[%d].%s" % (base, idx, server)
        out.append((sid, core.subjob_view(parent, pid, idx, server)))
    return out


# ---------------------------------------------------------------- qhold / qrls / qdel / qalter
def _hold_cmd(argv: list, name: str) -> int:
    from . import ops
    try:
        opts, ids = getopt.getopt(argv, "h:")
    except getopt.GetoptError as exc:
        _err("%s: %s" % (name, exc))
        return 2
    letters = dict(opts).get("-h", "u")
    if not letters or any(c not in "uosnp" for c in letters):
        _err("%s: illegal -h value" % name)
        return 2
    if not ids:
        _err("usage: %s [-h hold_list] job_identifier..." % name)
        return 2
    conf, req = core.Conf.from_env(), _requestor()
    op = ops.hold if name == "qhold" else ops.release
    return _each_job(ids, lambda jid: op(conf, req, jid, letters))


def qhold(argv: list) -> int:
    return _hold_cmd(argv, "qhold")


def qrls(argv: list) -> int:
    return _hold_cmd(argv, "qrls")


def qdel(argv: list) -> int:
    from . import ops
    try:
        opts, ids = getopt.getopt(argv, "xW:")
    except getopt.GetoptError as exc:
        _err("qdel: %s" % exc)
        return 2
    if not ids:
        _err("usage: qdel [-x] [-W force|suppress_email=X] job_identifier...")
        return 2
    purge = "-x" in dict(opts)
    conf, req = core.Conf.from_env(), _requestor()
    return _each_job(ids, lambda jid: ops.delete(conf, req, jid, purge=purge))


def qalter(argv: list) -> int:
    from . import ops
    try:
        opts, ids = getopt.getopt(argv, "a:A:c:e:h:j:k:l:m:M:N:o:p:P:r:S:u:W:")
    except getopt.GetoptError as exc:
        _err("qalter: %s" % exc)
        return 2
    if not ids:
        _err("usage: qalter [-l resource_list] [-W additional_attributes] ... "
             "job_identifier...")
        return 2
    changes: dict = {}
    cwd = os.getcwd()
    simple = {"-N": "Job_Name", "-M": "Mail_Users", "-m": "Mail_Points", "-A": "Account_Name",
              "-P": "project", "-j": "Join_Path", "-k": "Keep_Files"}
    for opt, val in opts:
        if opt == "-l":
            try:
                items = split_pbs_list(val)
            except ValueError:
                _err("qalter: illegal -l value")
                return 2
            res = changes.setdefault("Resource_List", {})
            for item in items:
                k, _, v = item.partition("=")
                res[k] = v
        elif opt == "-W":
            try:
                items = split_pbs_list(val, allow_space=True)
            except ValueError:
                _err("qalter: illegal -W value")
                return 2
            for item in items:
                k, _, v = item.partition("=")
                if k not in _W_KNOWN:
                    _err("qalter: Undefined attribute  %s" % k)
                    return 154
                changes[k] = v
        elif opt == "-h":
            changes["Hold_Types"] = val
        elif opt in simple:
            changes[simple[opt]] = val
        elif opt == "-o":
            changes["Output_Path"] = _abs_path(val, cwd)
        elif opt == "-e":
            changes["Error_Path"] = _abs_path(val, cwd)
        elif opt == "-p":
            changes["Priority"] = int(val)
    conf, req = core.Conf.from_env(), _requestor()
    return _each_job(ids, lambda jid: ops.alter(conf, req, jid, changes))


def qselect(argv: list) -> int:
    from . import ops
    try:
        opts, _ = getopt.getopt(argv, "l:h:u:s:xN:q:JT")
    except getopt.GetoptError as exc:
        _err("qselect: %s" % exc)
        return 2
    resources, holds, user, states, history = [], None, None, None, False
    for opt, val in opts:
        if opt == "-l":
            for item in split_pbs_list(val):
                parts = item.split(".", 2)
                if len(parts) != 3 or parts[1] not in ("eq", "ne", "lt", "le", "gt", "ge"):
                    _err("qselect: illegal -l value")
                    return 2
                resources.append(tuple(parts))
        elif opt == "-h":
            holds = val
        elif opt == "-u":
            user = val.split("@")[0]
        elif opt == "-s":
            states = val
        elif opt == "-x":
            history = True
    ids = ops.select_jobs(core.Conf.from_env(), _requestor(), resources=resources,
                          holds=holds, user=user, states=states, history=history)
    sys.stdout.write("".join(i + "\n" for i in ids))
    return 0


def qmgr(argv: list) -> int:
    from . import ops
    try:
        opts, _ = getopt.getopt(argv, "c:anz")
    except getopt.GetoptError as exc:
        _err("qmgr: %s" % exc)
        return 2
    cmds = [v for o, v in opts if o == "-c"]
    if not cmds:
        cmds = sys.stdin.read().splitlines()
    conf, req = core.Conf.from_env(), _requestor()
    for line in cmds:
        try:
            sys.stdout.write(ops.qmgr(conf, req, line))
        except PbsError as exc:
            _err(exc.message)
            return exc.exit_code
    return 0


def _periodic(argv: list) -> int:
    from . import periodic
    return periodic.child_main(argv)


COMMANDS = {"qsub": qsub, "qstat": qstat, "qhold": qhold, "qrls": qrls, "qdel": qdel,
            "qalter": qalter, "qselect": qselect, "qmgr": qmgr, "_periodic": _periodic}


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _err("usage: python -m pbs_globus_staging_sim.pbsdouble.cmd {%s} ..."
             % "|".join(sorted(c for c in COMMANDS if not c.startswith("_"))))
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the real queuejob hook with hostile staging requests.

Every generated request goes through ``data/hooks/globus_staging_queuejob.py`` -- the
script PBS runs -- executed by the PBS double's hook runner in-process
(``testing/pbsdouble/hookrun.run_hook``: fresh globals per run, the double's
``pbs`` module, the hook config imported with qmgr, the alarm armed), exactly as
``qsub`` runs it, minus the per-qsub state file round trip.  All requests take
this path; none is shortcut to ``hookcore``.

Each outcome is classified:

* accept  -- the hook accepted.  The request is then re-checked here: every
  local path must lie under the requestor's own root, no path may hold a
  ``..`` component or start with ``~user``, and a stage-in must have left the
  job system-held.  A violation is counted as an *escape* (must be 0).
* refuse  -- one line starting with ``stagein_globus: `` or
  ``stageout_globus: ``.  Its *shape* (quoted user input, numbers, paths and
  UUIDs replaced by placeholders) is counted.
* crash   -- anything else: the hook raised (PBS would print "encountered an
  exception"), hit its alarm, fell into its catch-all ("could not be
  checked"), or refused with more than one line or without the resource
  prefix.  Must be 0.

    python bench/fuzz_queuejob.py [--count N] [--seed S] [--shapes K]

Exit status 0 when crashes == 0 and escapes == 0, else 1.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import pwd
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent / "lib"), str(_HERE.parent / "sim" / "lib")]   # the product, its doubles

from pbs_globus_staging import installer, request, siteconfig  # noqa: E402
from pbs_globus_staging_sim.pbsdouble import core as pbscore  # noqa: E402
from pbs_globus_staging_sim.pbsdouble import hookrun  # noqa: E402
from pbs_globus_staging_sim.pbsdouble import pbs as pbsmod  # noqa: E402
from pbs_globus_staging_sim.pbsdouble.server import PbsServer  # noqa: E402

HOOK = "globus_staging_queuejob"
HOOK_SCRIPT = _HERE.parent / "lib" / "pbs_globus_staging" / "data" / "hooks" / (HOOK + ".py")
SITE = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
THETA = "08925f04-569f-11e7-bef8-22000b9a448b"
EAGLE = "05d2c76a-e867-4f67-aa57-76edeb0beda0"
PREFIXES = ("stagein_globus: ", "stageout_globus: ")

# ---------------------------------------------------------------- hostile material
CONTROL = [chr(c) for c in list(range(0, 32)) + [0x7F]]
UNICODE = [
    "\u202e", "\u202d", "\u2066", "\u200b", "\u200d", "\ufeff", "\u00a0", "\u3000",
    "\u2028", "\u2029", "\u180e",                            # invisible / bidi / spaces
    "\uff0f", "\u2215", "\u2044", "\u29f8", "\u2571", "\u0338", "\uff3c", "\u2216",
    "\uff1a", "\u2236", "\ua789", "\u02d0", "\u2024", "\uff0e", "\u3002", "\u00b7",
    "\ufe6b", "\uff20", "\uff0b", "\u2795", "\ufe62", "\uff5e", "\u02dc", "\u223c",
    "\u0430", "\u0435", "\u043e", "\u0440",                  # Cyrillic a e o p
    "\u00e9", "e\u0301", "\u2126", "\u212a", "\ufb01",        # composed/decomposed, K sign
    "\ud800", "\udfff", "\U0001f4a9", "\U000e0041", "\ue000",  # surrogates, tags, private
    "\u0000", "\u0085",
]
SHELL = [";", "|", "&", "&&", "$", "$(", ")", "`", "$(id)", "`id`", "${IFS}", "'", '"',
         "\\", "*", "?", "<", ">", ">>", "!", "#", "~", "{a,b}", "[x]", "; rm -rf / ;",
         "$(curl http://x)", "\n", "\r\n", "\t", " ", ",", "=", "+", "@", ":"]
PERCENT = ["%", "%2", "%zz", "%00", "%0A", "%0a", "%1F", "%7F", "%80", "%FF", "%2E%2E",
           "%2e%2E", "%2F", "%2f..%2f", "%25", "%252E%252E", "%40", "%2B", "%2C", "%20",
           "%3A", "%7E", "%7Eroot", "%%", "%2", "%G0", "%C3%A9", "%E2%80%AE"]
TRAVERSAL = ["..", "../", "/..", "/../", "/./", "//", "./", "~", "~root", "~other/",
             "~/../", "/~root/", "/~/../", ".../", "..%2F", "%2E%2E/", ".", "/.", "..."]
WORDS = ["in", "out", "a.dat", "data", "run42", "x", "results", "f.tar.gz", "dir/",
         "sub/dir/", "file name", "a,b", "a+b", "a@b", "a:b", "-rf", "--help"]
COLLS = ["theta-dtn", "eagle", "THETA-DTN", "Theta-Dtn", THETA, THETA.upper(), EAGLE,
         "nowhere-dtn", "1bad", "a" * 65, "", "theta dtn", "theta_dtn", "thetä-dtn",
         "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8", SITE, "theta-dtn.", "-x", "x;y"]
OPTIONS = ["sync=exists", "sync=size", "sync=mtime", "sync=checksum", "sync=bogus",
           "checksum=yes", "checksum=no", "checksum=maybe", "deadline=7d", "deadline=0m",
           "deadline=401d", "deadline=99999999d", "deadline=2031-02-28", "deadline=2031-02-30",
           "deadline=2031-01-01T25:00", "deadline=2031-01-01T10:00Z", "deadline=",
           "onfail=hold", "onfail=delete", "onfail=explode", "when=ok", "when=always",
           "when=notok", "when=never", "cleanup=/tmp/cleanup.sh", "cleanup=relative.sh",
           "cleanup=/x/../etc/shadow", "task=1f2e3d4c-0000-11ee-8000-0242ac120002",
           "task=1F2E3D4C-0000-11EE-8000-0242AC120002", "task=../../x", "task=",
           "task=1f2e3d4c-0000-11ee-8000-0242ac12000", "manifest=", "manifest=relative",
           "bogus=1", "=x", "sync", "SYNC=size", "x" * 21 + "=1"]


CLEAN_WORDS = ["in", "out", "a.dat", "data", "run42", "x", "results", "f.tar.gz", "sub/dir",
               "file%20name", "a%2Cb", "a%2Bb", "a%40b", "a:b", "-rf", "%7Ex", "caf\u00e9",
               "\u65e5\u672c"]
CLEAN_OPTIONS = {
    "in": ["sync=size", "sync=checksum", "checksum=yes", "deadline=7d", "deadline=12h",
           "onfail=hold", "onfail=delete", "task=1f2e3d4c-0000-11ee-8000-0242ac120002"],
    "out": ["sync=mtime", "checksum=no", "deadline=2d", "when=always", "when=ok"],
}


class Fixture:
    """A PBS double with the real queuejob hook installed and a site config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fs = root / "fs"
        self.me = pwd.getpwuid(os.getuid()).pw_name
        # Requestors: the caller (real uid, can own manifests), another real
        # account, and a name with no account (manifest owner lookups fail).
        self.users = [self.me, "nobody", "ghost-no-account"]
        for u in self.users:
            (self.fs / u).mkdir(parents=True, exist_ok=True)
        self.cfg = siteconfig.from_dict({
            "site": {"collection": SITE, "roots": [f"{self.fs}/{{user}}/"],
                     "collection_root": f"{self.fs}/"},
            "collections": {"theta-dtn": THETA, "eagle": EAGLE},
            "credentials": {"mode": "user",
                            "client_id": "5e1c0d2a-7b3f-4e8a-9c6d-2f1e0a9b8c7d"},
        }, source="fuzz-site.yaml")
        self.server = PbsServer(root / "pbs", exec_dir=root / "pbs-exec", server_name="fuzz")
        for name, flag in (("stagein_globus", ""), ("stageout_globus", ""),
                           ("globus_stage_state", "r"), ("globus_stage_tasks", "r")):
            self.server.create_resource(name, flag=flag)
        cf = installer.hook_config(site_config_path=root / "fuzz-site.yaml", site=self.cfg,
                                   journal=str(root / "journal.sqlite"), python=sys.executable,
                                   cycle_budget=5, alarm=30)
        self.server.create_hook(HOOK, events="queuejob", script=HOOK_SCRIPT,
                                config=json.dumps(cf), alarm=30)
        self.manifests = self._manifests()
        with pbscore.locked_state(self.server.conf, write=False) as state:
            self.state = json.loads(json.dumps(state))
        self.defs = hookrun.resource_defs(self.state)
        self.view = pbsmod._server(self.state["server_name"], lambda: {}, self.defs)

    def _manifests(self) -> List[str]:
        """Manifest files of every kind a user could point at."""
        d = self.fs / self.me / "manifests"
        d.mkdir(parents=True, exist_ok=True)
        out = []

        def write(name: str, text: str, mode: int = 0o644, owner: Optional[int] = None) -> Path:
            p = d / name
            p.write_text(text)
            p.chmod(mode)
            if owner is not None:
                os.chown(p, owner, -1)
            out.append(str(p))
            return p

        good = "\n".join(f"{self.fs}/{self.me}/m/{i}.dat@theta-dtn:/~/m/{i}.dat"
                         for i in range(5)) + "\n"
        write("good.txt", "# comment\n\n" + good)
        write("escape.txt", f"{self.fs}/{self.me}/../nobody/x@theta-dtn:/x\n")
        write("other-root.txt", f"{self.fs}/nobody/x@theta-dtn:/x\n")
        write("shell.txt", f"{self.fs}/{self.me}/$(id)@theta-dtn:/`id`\n")
        write("ctrl.txt", f"{self.fs}/{self.me}/a\x1b[31m@theta-dtn:/a\n")
        write("notutf8.txt", "x")
        (d / "notutf8.txt").write_bytes(b"/a\xff@theta-dtn:/b\n")
        write("options.txt", "sync=size\n")
        write("worldw.txt", good, mode=0o666)
        if os.geteuid() == 0:
            write("otherowner.txt", good, owner=pwd.getpwnam("nobody").pw_uid)
        huge = d / "huge.txt"
        with open(huge, "w") as fh:
            line = f"{self.fs}/{self.me}/h/%d@theta-dtn:/h/%d\n"
            for i in range(20000):
                fh.write(line % (i, i))
        out.append(str(huge))
        big = d / "big.txt"
        big.write_text("#" * ((1 << 20) + 10) + "\n")
        out.append(str(big))
        link = d / "link.txt"
        link.symlink_to(d / "good.txt")
        out.append(str(link))
        (self.fs / self.me / "linkdir").symlink_to(d)
        out.append(str(self.fs / self.me / "linkdir" / "good.txt"))
        out.append(str(d))                               # a directory
        out.append(str(d / "absent.txt"))
        out.append("/dev/zero")
        out.append("/proc/self/environ")
        out.append("/etc/shadow")
        fifo = d / "fifo"
        os.mkfifo(fifo)
        out.append(str(fifo))                            # must not block the hook
        return out

    def run(self, stagein: Optional[str], stageout: Optional[str], user: str,
            job_name: str) -> hookrun.HookOutcome:
        res = {}
        if stagein is not None:
            res["stagein_globus"] = stagein
        if stageout is not None:
            res["stageout_globus"] = stageout
        attrs = {"Resource_List": res, "Job_Name": job_name, "queue": "",
                 "Variable_List": {"PBS_O_HOME": f"/home/{user}", "X": job_name}}
        job = pbsmod._job("", attrs, mode="queuejob", defs=self.defs)
        out = hookrun.run_hook(self.server.conf, self.state, HOOK, event="queuejob",
                               params={"job": job}, requestor=user, requestor_host="login1",
                               server_view=self.view)
        out.job = job  # type: ignore[attr-defined]
        return out


class Generator:
    """Hostile request values: valid skeletons, then mutations."""

    def __init__(self, rng: random.Random, fx: Fixture) -> None:
        self.r = rng
        self.fx = fx

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def hostile(self) -> str:
        kind = self.r.randrange(6)
        src = (CONTROL, UNICODE, SHELL, PERCENT, TRAVERSAL, WORDS)[kind]
        return "".join(self.pick(src) for _ in range(self.r.randint(1, 3)))

    def mutate(self, text: str) -> str:
        for _ in range(self.r.randint(1, 3)):
            op = self.r.randrange(5)
            pos = self.r.randint(0, len(text))
            if op == 0:
                text = text[:pos] + self.hostile() + text[pos:]
            elif op == 1 and text:
                end = min(len(text), pos + self.r.randint(1, 4))
                text = text[:pos] + self.hostile() + text[end:]
            elif op == 2 and text:
                text = text[:pos] + text[pos + 1:]
            elif op == 3:
                text = text[:pos] + self.pick(TRAVERSAL) + text[pos:]
            else:
                text = text[:pos] + self.pick(PERCENT) + text[pos:]
        return text

    def path(self, user: str, *, local: bool, directory: bool, clean: bool) -> str:
        words = CLEAN_WORDS if clean else WORDS
        parts = [self.pick(words).strip("/") or "x" for _ in range(self.r.randint(1, 4))]
        tail = "/".join(parts) + ("/" if directory else "")
        if clean:
            owner = user if self.r.random() < 0.9 else self.pick(self.fx.users)
            return (f"{self.fx.fs}/{owner}/" if local else
                    self.pick(["/~/", "~/", f"/projects/{owner}/"])) + tail
        owner = user if self.r.random() < 0.8 else self.pick(self.fx.users + ["root", "..", ""])
        if local:
            base = f"{self.fx.fs}/{owner}/" if self.r.random() < 0.9 else self.pick(
                ["/", "/etc/", "/tmp/", f"{self.fx.fs}/", "", "~/", f"~{owner}/"])
        else:
            base = self.pick(["/~/", "~/", "/", f"/projects/{owner}/", f"~{owner}/", "/~"])
        return base + tail

    def item(self, user: str, clean: bool) -> str:
        d = self.r.random() < 0.4
        local = self.path(user, local=True, directory=d, clean=clean)
        remote = self.path(user, local=False, clean=clean,
                           directory=d if clean or self.r.random() < 0.95 else not d)
        coll = self.pick(COLLS[:7] if clean else COLLS)
        text = f"{local}@{coll}:{remote}"
        if not clean and self.r.random() < 0.5:
            text = self.mutate(text)
        return text

    def value(self, user: str, direction: str) -> str:
        # A third of the values are well formed (they must be accepted unless
        # they name another user's area or repeat themselves): the accepted
        # ones are what the escape check looks at.
        if self.r.random() < 0.35:
            parts = [self.item(user, True) for _ in range(self.r.randint(1, 4))]
            keys = set()
            for _ in range(self.r.randint(0, 2)):
                opt = self.pick(CLEAN_OPTIONS[direction])
                if opt.split("=")[0] not in keys:
                    keys.add(opt.split("=")[0])
                    parts.append(opt)
            if self.r.random() < 0.1:
                parts.append("manifest=" + self.fx.manifests[0])
            return "+".join(parts)
        roll = self.r.random()
        if roll < 0.02:
            return self.pick(["", " ", "+", "++", "@", ":", "=", "\x00", "task=", "manifest="])
        if roll < 0.04:       # huge values and too many items
            n = self.pick([1001, 2000, 5000])
            return "+".join(f"{self.fx.fs}/{user}/{i}@theta-dtn:/~/{i}" for i in range(n))
        if roll < 0.05:
            return "/" + "a" * self.pick([4095, 4096, 4097, 100000])
        parts: List[str] = [self.item(user, False) for _ in range(self.r.randint(0, 4))]
        for _ in range(self.r.randint(0, 3)):
            opt = self.pick(OPTIONS)
            parts.append(self.mutate(opt) if self.r.random() < 0.3 else opt)
        if self.r.random() < 0.15:
            m = "manifest=" + self.pick(self.fx.manifests)
            parts.append(self.mutate(m) if self.r.random() < 0.2 else m)
        if not parts:
            parts.append(self.item(user, False))
        self.r.shuffle(parts)
        joiner = "+" if self.r.random() < 0.95 else self.pick([",", " ", "++", "+ ", "\n"])
        return joiner.join(parts)

    def request(self) -> Tuple[Optional[str], Optional[str], str, str]:
        user = self.pick(self.fx.users) if self.r.random() < 0.3 else self.fx.me
        which = self.r.random()
        stagein = self.value(user, "in") if which < 0.8 else None
        stageout = self.value(user, "out") if which > 0.6 or stagein is None else None
        name = self.mutate("job" + self.pick(SHELL))[:230]
        return stagein, stageout, user, name


# ---------------------------------------------------------------- classification
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")   # request._q escapes ' and \ inside
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PATH = re.compile(r"(?<![\w'])/[^\s,;')]*")
_NUM = re.compile(r"\d+")
_ESC = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})|%[0-9A-Fa-f]{2}")


def shape(message: str, users: List[str]) -> str:
    """A refusal with its variable parts replaced: one line per distinct kind."""
    s = _QUOTED.sub("'Q'", message)
    s = _ESC.sub("ESC", s)
    s = _UUID.sub("UUID", s)
    s = _PATH.sub("/P", s)
    for u in sorted(users, key=len, reverse=True):
        s = s.replace(u, "USER")
    s = re.sub(r"U\+[0-9A-F]{4,6}", "U+X", s)
    s = _NUM.sub("N", s)
    return s


def escaped(fx: Fixture, stagein: Optional[str], stageout: Optional[str], user: str,
            job) -> Optional[str]:
    """Why an accepted request breaks the site's rules, or None."""
    root = f"{fx.fs}/{user}/"
    for value, direction in ((stagein, "in"), (stageout, "out")):
        if value is None:
            continue
        try:
            req = request.parse(value, direction=direction)
        except Exception as exc:  # accepted by the hook, refused here: inconsistent
            return f"accepted but does not parse: {exc}"
        for it in req.items:
            if not it.local.startswith(root):
                return f"local path {it.local!r} outside {root}"
            for p in (it.local, it.remote):
                comps = p.split("/")
                if ".." in comps:
                    return f"'..' in {p!r}"
                if comps[1].startswith("~") and p[:3] != "/~/":
                    return f"~user in {p!r}"
                if any(ord(c) < 0x20 or ord(c) == 0x7F for c in p):
                    return f"control character in {p!r}"
    if stagein is not None:
        holds = str(job.Hold_Types or "")
        if "s" not in holds:
            return f"stage-in accepted without a system hold (Hold_Types {holds!r})"
        if job.Resource_List["globus_stage_state"] != "waiting":
            return "stage-in accepted without globus_stage_state=waiting"
    return None


def run(count: int, seed: int, *, workdir: Optional[Path] = None,
        progress: bool = False) -> Dict[str, object]:
    own = workdir is None
    root = Path(workdir or tempfile.mkdtemp(prefix="fuzz-queuejob-"))
    try:
        fx = Fixture(root)
        gen = Generator(random.Random(seed), fx)
        shapes: collections.Counter = collections.Counter()
        examples: Dict[str, str] = {}
        crashes: List[str] = []
        escapes: List[str] = []
        accepts = 0
        slowest = 0.0
        t0 = time.perf_counter()
        for n in range(count):
            stagein, stageout, user, name = gen.request()
            t1 = time.perf_counter()
            out = fx.run(stagein, stageout, user, name)
            slowest = max(slowest, time.perf_counter() - t1)
            msg = out.message or ""
            if out.status == "accept":
                accepts += 1
                why = escaped(fx, stagein, stageout, user, out.job)
                if why:
                    escapes.append(f"{why}  <- in={stagein!r} out={stageout!r} user={user}")
            elif (out.status == "reject" and "\n" not in msg and "\r" not in msg
                  and msg.startswith(PREFIXES) and "could not be checked" not in msg
                  and "not configured" not in msg):
                key = shape(msg, fx.users)
                shapes[key] += 1
                examples.setdefault(key, msg)
            else:
                crashes.append(f"{out.status}: {msg!r}  <- in={stagein!r} out={stageout!r} "
                               f"user={user}")
            if progress and (n + 1) % 10000 == 0:
                print(f"  {n + 1} requests, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        elapsed = time.perf_counter() - t0
        log_tail = ""
        if crashes:
            log_tail = fx.server.log_text()[-4000:]
        return {"count": count, "seed": seed, "accepts": accepts,
                "refusals": sum(shapes.values()), "crashes": crashes, "escapes": escapes,
                "shapes": shapes, "examples": examples, "elapsed": elapsed,
                "slowest": slowest, "log_tail": log_tail}
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000, help="requests (default 100000)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--shapes", type=int, default=0,
                    help="print only the K most frequent refusal shapes (0 = all)")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")
    r = run(args.count, args.seed, progress=True)
    shapes: collections.Counter = r["shapes"]  # type: ignore[assignment]
    print(f"# command: python bench/fuzz_queuejob.py --count {args.count} --seed {args.seed}")
    print(f"# python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cpus; real hook script {HOOK_SCRIPT.name} via the double's "
          "hook runner, in-process")
    print(f"requests:  {r['count']}")
    print(f"accepted:  {r['accepts']}")
    print(f"refused:   {r['refusals']}  ({len(shapes)} distinct message shapes)")
    print(f"crashes:   {len(r['crashes'])}")
    print(f"escapes:   {len(r['escapes'])}")
    print(f"time:      {r['elapsed']:.1f} s  ({r['elapsed'] / r['count'] * 1e6:.0f} us/request, "
          f"slowest {r['slowest'] * 1000:.1f} ms)")
    print("\nrefusal shapes (count  shape):")
    items = shapes.most_common(args.shapes or None)
    for key, n in items:
        print(f"{n:8d}  {key}")
    for label, rows in (("CRASHES", r["crashes"]), ("ESCAPES", r["escapes"])):
        if rows:
            print(f"\n{label} (first 20):")
            for row in rows[:20]:  # type: ignore[index]
                print("  " + row[:600])
    if r["crashes"] and r["log_tail"]:
        print("\nserver log tail:\n" + str(r["log_tail"]))
    return 0 if not r["crashes"] and not r["escapes"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The package as a site gets it: a wheel and an sdist built from the tree
(``python -m build``), installed into a venv outside the source tree, carry
everything ``globus-staging install`` needs -- hook scripts, .HK files, the
example site config, the systemd unit and logrotate rule -- and the README's
admin commands run the suite from it.

Needs the package index (PyPI or the site's mirror) for the build backend and
the runtime dependencies; the build and the venv are made once per module.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = ("pbs_globus_staging/data/site.yaml.example",
        "pbs_globus_staging/data/globus-staging-agent.service",
        "pbs_globus_staging/data/globus-staging.logrotate") + tuple(
    "pbs_globus_staging/data/hooks/globus_staging_%s.%s" % (event, ext)
    for event in ("queuejob", "modifyjob", "runjob", "jobobit", "periodic")
    for ext in ("py", "HK"))


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=kw.pop("timeout", 600), **kw)
    assert proc.returncode == 0, "%s exited %d:\n%s" % (" ".join(map(str, cmd)),
                                                      proc.returncode, proc.stdout[-4000:])
    return proc.stdout


def _venv(path):
    _run([sys.executable, "-m", "venv", path])
    return Path(path) / "bin"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """sdist + wheel (the wheel built from the sdist, as ``python -m build`` does) of the
    product and of its test doubles (sim/), from a copy of the tree so the worktree gains
    no build/ or egg-info."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "build", "--outdir", tmp / "dist", src], cwd=tmp)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist-sim", src / "sim"],
         cwd=tmp)
    wheel, = (tmp / "dist").glob("*.whl")
    sdist, = (tmp / "dist").glob("*.tar.gz")
    sim_wheel, = (tmp / "dist-sim").glob("*.whl")
    return {"tmp": tmp, "src": src, "wheel": wheel, "sdist": sdist, "sim_wheel": sim_wheel}


@pytest.fixture(scope="module")
def wheel_venv(built):
    """A fresh venv with both wheels and their dependencies, away from the source tree
    (the doubles, to give the installed product a PBS and a Globus to work against)."""
    bin_ = _venv(built["tmp"] / "venv")
    _run([bin_ / "pip", "install", "--quiet", built["wheel"], built["sim_wheel"]],
         cwd=built["tmp"])
    return bin_


def test_the_product_wheel_carries_none_of_the_doubles(built):
    product = zipfile.ZipFile(built["wheel"]).namelist()
    sim = zipfile.ZipFile(built["sim_wheel"]).namelist()
    in_sdist = tarfile.open(built["sdist"]).getnames()
    assert [n for n in product + in_sdist if "pbs_globus_staging_sim" in n
            or re.search(r"pbs_globus_staging/(emulator|testing|demo\.py|commands/(demo|emulator))",
                         n)] == []
    assert "pbs_globus_staging/cli.py" in product
    for name in ("emulator/core.py", "pbsdouble/pbs.py", "site.py", "demo.py",
                 "commands/demo.py", "commands/emulator.py"):
        assert "pbs_globus_staging_sim/" + name in sim, name
    assert not [n for n in sim if n.startswith("pbs_globus_staging/")]
    entry_points, = [n for n in sim if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(built["sim_wheel"]).read(entry_points).decode()
    assert "[pbs_globus_staging.commands]" in text
    assert "demo = pbs_globus_staging_sim.commands.demo" in text


def test_wheel_and_sdist_carry_the_hooks_and_shipped_files(built):
    in_wheel = set(zipfile.ZipFile(built["wheel"]).namelist())
    in_sdist = {n.split("/", 1)[1] for n in tarfile.open(built["sdist"]).getnames() if "/" in n}
    for name in DATA:
        assert name in in_wheel, name
        assert "lib/" + name in in_sdist, name


@pytest.mark.parametrize("what", ["sdist", "source tree (pip install .)"])
def test_sdist_and_pip_install_dot_find_the_hooks(built, what):
    # --no-deps: what is checked here is the package's own files, not its dependencies.
    bin_ = _venv(built["tmp"] / ("venv-" + what.split()[0]))
    target = built["sdist"] if what == "sdist" else "."
    _run([bin_ / "pip", "install", "--quiet", "--no-deps", target], cwd=built["src"])
    listing = _run([bin_ / "globus-staging", "files"], cwd=built["tmp"])
    paths = dict(line.split(": ", 1) for line in listing.splitlines())
    site_packages = str(bin_.parent / "lib")
    for name, path in paths.items():
        assert path.startswith(site_packages), (name, path)      # not the source tree
        assert os.path.exists(path), path
    plan = _run([bin_ / "python", "-I", "-c",
                 "from pbs_globus_staging import installer; "
                 "print(len(installer.make_plan(hook_config='/x.json').hooks))"],
                cwd=built["tmp"])
    assert plan.strip() == "5"
    # the product alone, as production installs it: its CLI works, the doubles are absent
    usage = _run([bin_ / "globus-staging", "--help"], cwd=built["tmp"])
    assert "show" in usage and "demo" not in usage and "emulator" not in usage
    hidden = subprocess.run([str(bin_ / "python"), "-I", "-c", "import pbs_globus_staging_sim"],
                            cwd=str(built["tmp"]), capture_output=True, text=True)
    assert hidden.returncode == 1 and "ModuleNotFoundError" in hidden.stderr


def test_wheel_installs_the_suite_and_stages_a_job(built, wheel_venv, tmp_path):
    out = json.loads(_run([wheel_venv / "python", "-I", REPO / "tests" / "helpers" / "wheel_site.py",
                           tmp_path / "site"], cwd=tmp_path, timeout=300).splitlines()[-1])
    site_packages = str(wheel_venv.parent / "lib")
    assert out["package"].startswith(site_packages)
    assert not any(p.startswith(str(REPO)) for p in out["sys_path"])
    assert out["commands"][0] == [["install", "--python", str(wheel_venv / "python"),
                                   "--freq", "1", "--alarm", "30"], 0]
    # --dry-run: the qmgr script imports the hook scripts the wheel installed
    imports = re.findall(r"application/x-python default (\S+)", out["dry_run"])
    assert len(imports) == 5 and all(p.startswith(site_packages) for p in imports)
    # the hooks import the package from the venv, and what PBS holds is the shipped script
    cf = out["hook_config"]
    assert cf["package_path"].startswith(site_packages)
    assert os.path.isdir(os.path.join(cf["package_path"], "pbs_globus_staging"))
    assert cf["python"] == str(wheel_venv / "python")
    shipped = Path(imports[0]).parent
    assert out["imported_hooks"] and all(
        text == (shipped / (name[:-3] + ".py")).read_text()
        for name, text in out["imported_hooks"].items() if name.startswith("globus_staging_"))
    # the job: held at qsub, ran with its data, results staged out
    assert out["held"] == ["H", "s"]
    assert out["result"] == "100"
    assert out["final"] == {"job_state": "F", "Exit_status": 0}
    for word in ("stagein_succeeded", "released", "stageout_succeeded"):
        assert word in out["timeline"]
    # uninstall removes the hook config, agent log, users' views and the token cache
    # (cached access tokens), keeps the journal and says so; --purge removes it
    made = {"agent.log", "users", "user-tokens.db", "journal.sqlite"}
    assert made <= set(out["before_uninstall"])
    un = out["uninstall"]
    assert 0 not in un["hooks"]                # qmgr knows neither hook any more
    assert not un["hook_config"] and not un["hook_config_dir"]
    assert not {"agent.log", "users", "user-tokens.db"} & set(un["left"])
    assert "journal.sqlite" in un["left"]
    assert "kept: the journal " + str(tmp_path / "site" / "journal.sqlite") in un["stdout"]
    assert "not removed: each user's Globus login (refresh token) in " in un["stdout"]
    for word in ("agent.log", "users", "user-tokens.db", "globus_staging.json"):
        assert re.search(r"^removed: \S*%s$" % re.escape(word), un["stdout"], re.M), word
    # the finished job in history still names the resources: kept, and it says how
    assert un["rc"] == 1 and "qdel -x" in un["stderr"]
    purge = out["purge"]
    assert not [n for n in purge["left"] if n.startswith("journal.sqlite")]
    assert "kept: the journal" not in purge["stdout"]
    # the shipped logrotate rule, filled in with this install's agent log
    assert_logrotate_rule(out["logrotate"], out["agent_log"])
    assert_systemd_unit(tmp_path / "site" / "globus-staging-agent.service",
                        program=str(wheel_venv / "globus-staging"))


_LOGROTATE_DIRECTIVES = {"daily", "weekly", "monthly", "rotate", "maxsize", "missingok",
                         "notifempty", "compress", "delaycompress", "copytruncate", "su",
                         "create", "size"}


def assert_logrotate_rule(text, log_path):
    """logrotate(8)'s grammar, as far as the rule uses it: PATH { directive... }."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert lines[0] == log_path + " {" and lines[-1] == "}"
    for line in lines[1:-1]:
        word = line.split()[0]
        assert word in _LOGROTATE_DIRECTIVES, line
    assert "copytruncate" in lines          # a running agent keeps its log open


def assert_systemd_unit(path, *, program):
    text = path.read_text()
    assert re.search(r"^ExecStart=%s agent$" % re.escape(program), text, re.M)
    sections = re.findall(r"^\[(\w+)\]$", text, re.M)
    assert sections == ["Unit", "Service", "Install"]
    if shutil.which("systemd-analyze"):
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=60)
        assert proc.returncode == 0, proc.stdout

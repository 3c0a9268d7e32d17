"""What a non-root user sees: only their own jobs, through the summaries the
agent writes for them; admin actions refused.  The CLI really runs as another
uid (a subprocess that drops root), so the file permissions are what is tested;
and the login hook-up, with the emulator standing in for the browser step."""
import contextlib
import io
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from e2e_helpers import make_site, remote_file, request_state, stagein_arg
from pbs_globus_staging import cli
from pbs_globus_staging.commands import userviews

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch uids")


def other_user():
    """A non-root account that exists on any Linux machine (``nobody`` where
    there is one), so nothing depends on a test user like alice existing."""
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return next(p for p in pwd.getpwall() if p.pw_uid not in (0, os.getuid()))


def run_as(pw, site, *args):
    """``globus-staging ARGS`` as ``pw``'s uid: a forked child drops root and
    runs the CLI in-process (the venv's interpreter may live where that user
    cannot exec it, e.g. under /root); returns (exit code, stdout, stderr)."""
    # Import in the parent what the child needs: it may not read the stdlib.
    cli.load_site(str(site.config_path))
    from pbs_globus_staging.commands import admin, check, login, show  # noqa: F401
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        result = [70, "", "child failed"]
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["--config", str(site.config_path), *args])
            result = [code, out.getvalue(), err.getvalue()]
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            result = [70, "", f"{type(exc).__name__}: {exc}"]
        finally:
            os.write(w, json.dumps(result).encode())
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    code, out, err = json.loads(b"".join(chunks))
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture
def shared_site():
    # pytest's tmp dirs are 0700: another uid could not even reach the site
    # config, as it can on a real system (/etc/pbs-globus-staging/site.yaml).
    root = Path(tempfile.mkdtemp(prefix="gs-users-"))
    root.chmod(0o711)
    s = make_site(root)
    s.config_path.chmod(0o644)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_user_sees_only_their_own_jobs(shared_site):
    site = shared_site
    pw = other_user()
    site.add_user(pw.pw_name)
    remote_file(site, "in/a.dat")
    mine = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))       # root's job
    theirs = site.submit("-l", f"stagein_globus={site.site_dir}/{pw.pw_name}/in/"
                               f"@theta-dtn:~/{pw.pw_name}/in/", user=pw.pw_name)
    site.run_until(lambda: site.job_state(mine) == "F" and request_state(site, theirs)
                   not in (None, "pending"), timeout=60)
    # The token file site.add_user wrote is root's, not theirs: the agent
    # refuses it, so their job waits for them -- which they must be able to read.
    their_state = request_state(site, theirs)

    proc = run_as(pw, site, "show", theirs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"job {theirs}  owner {pw.pw_name}")
    assert f"stage-in: {their_state}" in proc.stdout
    view = json.loads(run_as(pw, site, "show", "--json", theirs).stdout)
    assert view["job_id"] == theirs and view["owner"] == pw.pw_name

    # root's job reads exactly like a job that does not exist
    other = run_as(pw, site, "show", mine)
    missing = run_as(pw, site, "show", "99999.pbsdouble")
    assert other.returncode == missing.returncode == 4 and other.stdout == ""
    assert other.stderr.replace(mine, "JOB") == missing.stderr.replace("99999.pbsdouble", "JOB")

    status = json.loads(run_as(pw, site, "status", "--json").stdout)
    jobs = {j for ids in status["jobs_by_state"].values() for j in ids}
    assert jobs == {theirs} and status["user"] == pw.pw_name

    # admin actions are refused for a user, with what to do
    for argv in (["retry", theirs], ["cancel", theirs], ["release", theirs, "--reason", "x"],
                 ["adopt", theirs, "0b0b0b0b-0000-4000-8000-000000000000"]):
        proc = run_as(pw, site, *argv)
        assert proc.returncode == 4, (argv, proc.stderr)
        assert "is an admin action: run it as root" in proc.stderr
    # the journal stays root-only; each user's directory is theirs alone
    assert (site.root / "journal.sqlite").stat().st_mode & 0o777 == 0o600
    users = site.root / "users"
    assert (users / site.user).stat().st_mode & 0o777 == 0o700
    assert (users / pw.pw_name).stat().st_uid == pw.pw_uid

    # root's show still reads the journal for both
    assert site.cli("show", theirs).stdout.startswith(f"job {theirs}  owner {pw.pw_name}")


def test_views_are_written_symlink_safe_and_only_to_the_owner(tmp_path):
    """The publisher writes as root into a directory the user owns."""
    from pbs_globus_staging.journal import Journal
    pw = other_user()
    j = Journal.open(tmp_path / "state" / "journal.sqlite")
    j.upsert_job("7.srv", owner=pw.pw_name)
    j.add_event("7.srv", "seen", "seen")
    j.upsert_job("8[1].srv", owner="no-such-user-here")
    j.add_event("8[1].srv", "seen", "seen")
    base = userviews.views_dir(str(j.path))
    udir = base / pw.pw_name
    base.mkdir(mode=0o711)
    udir.mkdir(mode=0o700)
    os.chown(udir, pw.pw_uid, pw.pw_gid)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    # a symlink planted where the summary goes is replaced, never written through
    os.symlink(victim, udir / userviews.file_name("7.srv"))
    assert userviews.publish(j, base) == 1
    assert victim.read_text() == "keep me\n"
    target = udir / "7.srv.json"
    assert not target.is_symlink() and target.stat().st_uid == pw.pw_uid
    assert json.loads(target.read_text())["owner"] == pw.pw_name
    assert not (base / "no-such-user-here").exists()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o711
    # a new event: that job again
    j.add_event("7.srv", "released", "x", at=j.events("7.srv")[-1].time + 10)
    assert userviews.publish(j, base) >= 1
    # a directory owned by someone else is refused (a swap by another user)
    os.chown(udir, 0, 0)
    j.add_event("7.srv", "job_ended", "x", at=j.events("7.srv")[-1].time + 10)
    assert userviews.publish(j, base) == 0
    j.close()


def test_login_writes_the_token_file_and_held_jobs_resume(tmp_path, capsys):
    import globus_sdk
    from globus_sdk.login_flows import LoginFlowManager

    from pbs_globus_staging.commands import login
    from pbs_globus_staging_sim.site import NATIVE_CLIENT, REMOTE_COLLECTION

    site = make_site(tmp_path)
    try:
        token = site.token_dir(site.user) / "tokens.json"
        token.unlink()                         # never logged in
        remote_file(site, "in/a.dat")
        job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
        site.run_until(lambda: request_state(site, job) == "user-action", timeout=60)
        assert "to fix: globus-staging login" in site.timeline(job)

        class Browser(LoginFlowManager):
            """The browser step: follow the URL on the emulator's login page."""

            def run_login_flow(self, auth_parameters):
                from pbs_globus_staging_sim.browser import follow_login_url

                self.asked = list(auth_parameters.required_scopes)
                url = self._get_authorize_url(auth_parameters,
                                              site.emulator.url + "/v2/web/auth-code")
                code = follow_login_url(url, site.user)
                return self.login_client.oauth2_exchange_code_for_tokens(code)

        cfg = cli.load_site(str(site.config_path))
        browser = Browser(globus_sdk.NativeAppAuthClient(NATIVE_CLIENT,
                                                         base_url=site.emulator.url),
                          request_refresh_tokens=True)
        path = login.run_login(cfg, collections=["theta-dtn"], flow_manager=browser)
        assert path == token and token.stat().st_mode & 0o777 == 0o600
        assert f"{REMOTE_COLLECTION}/data_access" in browser.asked[0]   # the alias resolved
        site.run_until(lambda: site.job_state(job) == "F", timeout=60)

        # bad collection names and client mode: usage errors (exit 2), one line
        assert cli.main(["--config", str(site.config_path), "login", "--collection",
                         "nowhere-dtn"]) == 2
        assert "neither a collection UUID nor a site alias (aliases: eagle, theta-dtn)" in \
            capsys.readouterr().err
        secret = tmp_path / "secret"
        secret.write_text("s3cr3t\n")
        secret.chmod(0o600)
        import yaml
        data = yaml.safe_load(site.config_path.read_text())
        data["credentials"].update(mode="client", client_secret_file=str(secret))
        data["policy"] = [{"users": ["*"], "allow": ["theta-dtn:/{user}/"]}]
        client_cfg = tmp_path / "client.yaml"
        client_cfg.write_text(yaml.safe_dump(data))
        assert cli.main(["--config", str(client_cfg), "login"]) == 2
        assert "service identity" in capsys.readouterr().err
    finally:
        site.stop()

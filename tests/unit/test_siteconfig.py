"""Site configuration: defaults, validation errors naming file + key, YAML loading,
the hooks' JSON subset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbs_globus_staging import siteconfig
from pbs_globus_staging.errors import ConfigError
from pbs_globus_staging.siteconfig import from_dict, load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "lib" / "pbs_globus_staging" / "data" / "site.yaml.example"
SITE = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
THETA = "08925f04-569f-11e7-bef8-22000b9a448b"
CLIENT = "2f8e9d7c-1b3a-4c5d-8e7f-6a5b4c3d2e1f"


def cfg_error(data, source="site.yaml") -> str:
    with pytest.raises(ConfigError) as ei:
        from_dict(data, source=source)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_defaults():
    cfg = siteconfig.default()
    assert cfg.site.collection is None
    assert cfg.site.roots == ("/home/{user}/",)
    assert cfg.credentials.mode == "user"
    assert cfg.globus.transfer_url is None and cfg.globus.http_timeout == 30.0
    # no budget by default: the installer derives it from the periodic hook
    assert cfg.agent.poll_interval == 2.0 and cfg.agent.cycle_budget is None
    assert cfg.agent.default_deadline == 7 * 86400
    assert cfg.agent.stagein_failure == "hold" and cfg.agent.stageout_when == "ok"
    assert cfg.limits.max_value_length == 4096 and cfg.limits.manifest_max_bytes == 1 << 20
    assert cfg.policy == () and cfg.alerts == {}
    assert from_dict(None, source="x") == from_dict({}, source="x")


def test_example_file_loads_and_matches_its_comments():
    cfg = load(str(EXAMPLE))
    assert cfg.source == str(EXAMPLE)
    assert cfg.site.collection == SITE
    assert cfg.site.roots == ("/lus/{user}/", "/home/{user}/")
    assert cfg.collections.aliases["theta-dtn"] == THETA
    assert cfg.collections.allow_unlisted is False
    assert cfg.agent.orphan_grace == 3600 and cfg.agent.fatal_fault_window == 600
    assert cfg.policy[1].groups == ("climate",) and cfg.policy[1].directions == ("in",)


@pytest.mark.parametrize("text,seconds", [
    (5, 5.0), (0.5, 0.5), ("30", 30.0), ("30s", 30.0), ("10m", 600.0), ("2h", 7200.0),
    ("7d", 604800.0), ("1w", 604800.0), (" 1.5h ", 5400.0),
])
def test_durations(text, seconds):
    assert from_dict({"agent": {"poll_interval": text}}, source="s").agent.poll_interval == seconds
    assert siteconfig.parse_duration(text) == seconds


def test_duration_errors():
    assert cfg_error({"agent": {"poll_interval": "abc"}}) == (
        "site.yaml: agent.poll_interval: must be a positive number of seconds or a duration "
        "like 30s, 10m, 1.5h, 1h30m, 7d, 1w (got 'abc')")
    assert "agent.cycle_budget: must be a positive number" in \
        cfg_error({"agent": {"cycle_budget": 0}})
    assert "(got True)" in cfg_error({"agent": {"poll_interval": True}})
    assert "(got -1)" in cfg_error({"agent": {"orphan_grace": -1}})
    assert "(got '5y')" in cfg_error({"agent": {"default_deadline": "5y"}})
    # zero is fine where it means "off"
    assert from_dict({"agent": {"batch_window": 0, "orphan_grace": "0s"}},
                     source="s").agent.batch_window == 0


def test_unknown_keys_are_errors():
    assert cfg_error({"agent": {"poll_intervl": 3}}).startswith(
        "site.yaml: agent.poll_intervl: unknown key; did you mean 'poll_interval'? allowed keys:")
    assert cfg_error({"sites": {}}).startswith(
        "site.yaml: sites: unknown key; did you mean 'site'?")
    assert "credentials.secret: unknown key" in cfg_error({"credentials": {"secret": "hunter2"}})
    # the value of an unknown key is never echoed (it may be a secret)
    assert "hunter2" not in cfg_error({"credentials": {"secret": "hunter2"}})
    assert "policy[0].alow: unknown key; did you mean 'allow'?" in \
        cfg_error({"policy": [{"users": ["a"], "alow": ["x:/"]}]})


@pytest.mark.parametrize("data,needle", [
    ({"site": "x"}, "site: must be a mapping of keys to values (got 'x')"),
    ({"site": {"collection": "nope"}}, "site.collection: must be a Globus collection or client UUID (got 'nope')"),
    ({"site": {"roots": []}}, "site.roots: must be a non-empty list of absolute paths (got [])"),
    ({"site": {"roots": "/lus/"}}, "site.roots: must be a non-empty list"),
    ({"site": {"roots": ["lus/{user}"]}}, "site.roots[0]: must be an absolute path (got 'lus/{user}')"),
    ({"site": {"roots": ["/lus/../x/"]}}, "site.roots[0]: must not contain '..'"),
    ({"site": {"roots": ["/lus/{group}/"]}}, "site.roots[0]: may use only the {user} placeholder"),
    ({"site": {"name": 5}}, "site.name: must be a non-empty string (got 5)"),
    ({"collections": {"theta": "x"}}, "collections.theta: must be a Globus collection or client UUID (got 'x')"),
    ({"collections": {"allow_unlisted": "yes"}}, "collections.allow_unlisted: must be true or false (got 'yes')"),
    ({"collections": {"allow_unlisted_": True}}, "collections.allow_unlisted_: must be a Globus collection"),
    ({"collections": {"1bad": THETA}}, "collections.1bad: an alias must start with a letter"),
    ({"collections": {THETA: THETA}}, f"collections.{THETA}: an alias must start with a letter"),
    ({"collections": {"Theta": THETA, "theta": THETA}}, "collections.theta: differs from alias 'Theta' only in case"),
    ({"credentials": {"mode": "service"}}, "credentials.mode: must be one of user | client (got 'service')"),
    ({"credentials": {"mode": "client", "client_secret_file": "/s"}}, "credentials.client_id: is required when mode is client"),
    ({"credentials": {"mode": "client", "client_id": CLIENT}}, "credentials.client_secret_file: is required when mode is client"),
    ({"credentials": {"mode": "client", "client_id": CLIENT, "client_secret_file": "/s"}},
     "policy: client credentials mode needs at least one policy rule"),
    ({"credentials": {"client_secret_file": "secret"}}, "credentials.client_secret_file: must be an absolute path"),
    ({"credentials": {"token_dir": "/var/tokens"}}, "credentials.token_dir: must contain {user}"),
    ({"globus": {"transfer_url": "localhost:8080"}}, "globus.transfer_url: must be null or an http(s):// URL"),
    ({"globus": {"max_retries": -1}}, "globus.max_retries: must be a whole number >= 0 (got -1)"),
    ({"globus": {"max_retries": 1.5}}, "globus.max_retries: must be a whole number >= 0 (got 1.5)"),
    ({"agent": {"stagein_failure": "requeue"}}, "agent.stagein_failure: must be one of hold | delete (got 'requeue')"),
    ({"agent": {"stageout_when": True}}, "agent.stageout_when: must be one of ok | always | notok (got True)"),
    ({"agent": {"max_tasks_per_identity": 0}}, "agent.max_tasks_per_identity: must be a positive whole number (got 0)"),
    ({"agent": {"python": "python3"}}, "agent.python: must be an absolute path (got 'python3')"),
    ({"pbs": {"home": "var/spool/pbs"}}, "pbs.home: must be an absolute path"),
    ({"journal": {"path": 3}}, "journal.path: must be a non-empty string (got 3)"),
    ({"limits": {"max_items": "many"}}, "limits.max_items: must be a positive whole number (got 'many')"),
    ({"policy": {"users": ["a"]}}, "policy: must be a list of rules"),
    ({"policy": [{"allow": ["theta:/x/"]}]}, "policy[0]: must name users, groups or projects"),
    ({"policy": [{"users": ["a"]}]}, "policy[0].allow: must list at least one"),
    ({"policy": [{"users": ["a"], "allow": ["/x/"]}]}, "policy[0].allow[0]: must look like 'alias-or-uuid:/path/prefix/'"),
    ({"policy": [{"users": ["a"], "allow": ["nowhere:/x/"]}]}, "policy[0].allow[0]: collection 'nowhere' is not a UUID or an alias"),
    ({"policy": [{"users": ["a"], "allow": [f"{THETA}:x/"]}]}, "policy[0].allow[0]: must be an absolute path"),
    ({"policy": [{"users": [5], "allow": [f"{THETA}:/x/"]}]}, "policy[0].users[0]: must be a non-empty string (got 5)"),
    ({"policy": [{"users": ["a"], "allow": [f"{THETA}:/x/"], "directions": ["up"]}]}, "policy[0].directions[0]: must be in or out"),
    ({"alerts": []}, "alerts: must be a mapping (got [])"),
    ([1, 2], "site.yaml: the configuration must be a mapping of sections"),
])
def test_validation_errors(data, needle):
    msg = cfg_error(data)
    assert msg.startswith("site.yaml: ")
    assert needle in msg, msg


def test_policy_rules_normalised():
    cfg = from_dict({"collections": {"theta": THETA},
                     "policy": [{"users": "alice", "allow": ["theta:/p/{user}",
                                                              f"{THETA.upper()}:/q/"]}]},
                    source="s")
    rule = cfg.policy[0]
    assert rule.users == ("alice",)
    assert rule.allow == ("theta:/p/{user}/", f"{THETA}:/q/")
    assert rule.directions == ("in", "out")


def test_uuids_are_lowercased():
    cfg = from_dict({"site": {"collection": SITE.upper()}, "collections": {"t": THETA.upper()}},
                    source="s")
    assert cfg.site.collection == SITE and cfg.collections.aliases == {"t": THETA}


def test_alerts_kept_opaque():
    cfg = from_dict({"alerts": {"mail": {"to": ["ops@example.org"]}}}, source="s")
    assert cfg.alerts == {"mail": {"to": ["ops@example.org"]}}


# --- files -------------------------------------------------------------------

def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as ei:
        load(str(p))
    assert str(ei.value) == f"{p}: cannot read the site configuration (No such file or directory)"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("site:\n  name: x\nagent:\n  poll_interval: [1, 2\n")
    with pytest.raises(ConfigError) as ei:
        load(str(p))
    msg = str(ei.value)
    assert msg.startswith(f"{p}: YAML syntax error: line ")
    assert "\n" not in msg


def test_duplicate_yaml_key_is_an_error(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("agent:\n  poll_interval: 2\n  poll_interval: 5\n")
    with pytest.raises(ConfigError, match=r"site\.yaml: line 3: key 'poll_interval' appears twice"):
        load(str(p))


def test_validation_error_names_the_file(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("agent:\n  poll_interval: abc\n")
    with pytest.raises(ConfigError) as ei:
        load(str(p))
    assert str(ei.value) == (f"{p}: agent.poll_interval: must be a positive number of seconds "
                             "or a duration like 30s, 10m, 1.5h, 1h30m, 7d, 1w (got 'abc')")


def test_empty_file_is_all_defaults(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("# nothing yet\n")
    assert load(str(p)).agent == siteconfig.default().agent


def test_not_utf8(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_bytes(b"site:\n  name: \xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load(str(p))


def test_yaml_is_not_a_mapping(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="the configuration must be a mapping of sections"):
        load(str(p))


# --- hook config -----------------------------------------------------------------

def test_hook_config_round_trip_through_json():
    cfg = load(str(EXAMPLE))
    data = json.loads(json.dumps(siteconfig.to_hook_config(cfg)))
    back = siteconfig.from_hook_config(data)
    assert back.source == cfg.source
    for part in ("site", "collections", "credentials", "policy", "limits", "pbs", "journal"):
        assert getattr(back, part) == getattr(cfg, part), part
    assert back.agent.stagein_failure == cfg.agent.stagein_failure
    assert back.agent.default_deadline == cfg.agent.default_deadline


def test_hook_config_client_mode_round_trip():
    cfg = from_dict({"site": {"collection": SITE}, "collections": {"theta": THETA},
                     "credentials": {"mode": "client", "client_id": CLIENT,
                                     "client_secret_file": "/etc/pgs/client.secret"},
                     "policy": [{"groups": ["g"], "allow": ["theta:/d/{user}/"]}]}, source="s")
    back = siteconfig.from_hook_config(json.loads(json.dumps(siteconfig.to_hook_config(cfg))))
    assert back.credentials == cfg.credentials and back.policy == cfg.policy


def test_hook_config_holds_no_secret(tmp_path):
    data = siteconfig.to_hook_config(load(str(EXAMPLE)))
    assert "client_secret" not in {k for k in data["credentials"] if not k.endswith("_file")}
    assert "alerts" not in data      # may hold SMTP passwords; hooks do not need it


def test_hook_config_errors():
    with pytest.raises(ConfigError, match=r"hook config: must be a JSON object"):
        siteconfig.from_hook_config([])
    with pytest.raises(ConfigError, match=r"hook config: format: must be 1 \(got None\)"):
        siteconfig.from_hook_config({})
    data = siteconfig.to_hook_config(siteconfig.default())
    data["agent"]["stagein_failure"] = "explode"
    with pytest.raises(ConfigError,
                       match=r"^hook config \(from <defaults>\): agent.stagein_failure: must be"):
        siteconfig.from_hook_config(data)


def test_modules_import_under_python39_without_yaml():
    """The hooks' modules must import on the distribution Python 3.9 with no
    third-party packages (PyYAML is not installed there)."""
    py39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"
    if not os.path.exists(py39):
        py39 = sys.executable
    code = ("import sys; sys.path.insert(0, %r); "
            "import pbs_globus_staging.request as r, pbs_globus_staging.siteconfig as s, "
            "pbs_globus_staging.policy as p; "
            "assert 'yaml' not in sys.modules; "
            "c = s.from_hook_config(s.to_hook_config(s.default())); "
            "print(r.render(r.parse('/a@c:/b+deadline=2d', direction='in')))") % str(REPO / "lib")
    out = subprocess.run([py39, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "/a@c:/b+deadline=2d"


def test_cycle_budget_when_given_is_validated():
    assert from_dict({"agent": {"cycle_budget": "20s"}}, source="x").agent.cycle_budget == 20.0
    with pytest.raises(ConfigError, match="agent.cycle_budget"):
        from_dict({"agent": {"cycle_budget": "soon"}}, source="site.yaml")

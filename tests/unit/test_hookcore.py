"""The event hooks' decisions (hookcore) on plain values."""
import json
import os

import pytest

from pbs_globus_staging import hookcore, siteconfig, states

SITE = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
THETA = "08925f04-569f-11e7-bef8-22000b9a448b"


@pytest.fixture
def config(tmp_path):
    site = siteconfig.from_dict({"site": {"collection": SITE, "roots": ["/lus/{user}/"]},
                                 "collections": {"theta-dtn": THETA}}, source="site.yaml")
    return hookcore.HookConfig(package_path="", site=site, journal=str(tmp_path / "j.sqlite"),
                               raw={})


GOOD = "/lus/alice/in/@theta-dtn:/~/in/"


def test_no_request_is_untouched(config):
    assert hookcore.queuejob(stagein=None, stageout=None, user="alice", config=None) \
        is hookcore.ACCEPT


def test_good_stagein_is_held_waiting(config):
    a = hookcore.queuejob(stagein=GOOD, stageout=None, user="alice", config=config)
    assert a.reject is None and a.add_system_hold
    assert a.resources == {states.RES_STATE: states.Stage.WAITING}


def test_stageout_only_is_not_held(config):
    a = hookcore.queuejob(stagein=None, stageout="/lus/alice/out/@theta-dtn:/~/out/",
                          user="alice", config=config)
    assert a.reject is None and not a.add_system_hold


def test_bad_request_one_line_naming_resource(config):
    a = hookcore.queuejob(stagein="/lus/alice/in/", stageout=None, user="alice", config=config)
    assert a.reject.startswith("stagein_globus: ") and "\n" not in a.reject
    assert "expected" in a.reject


def test_other_users_root_refused(config):
    a = hookcore.queuejob(stagein="/lus/bob/in/@theta-dtn:/~/in/", stageout=None, user="alice",
                          config=config)
    assert a.reject and "/lus/alice/" in a.reject


def test_unknown_alias_refused(config):
    a = hookcore.queuejob(stagein="/lus/alice/in/@nowhere:/~/in/", stageout=None, user="alice",
                          config=config)
    assert a.reject and "nowhere" in a.reject


def test_missing_config_refuses_staged_job_only():
    a = hookcore.queuejob(stagein=GOOD, stageout=None, user="alice", config=None,
                          config_error="no file")
    assert a.reject and "administrator" in a.reject
    assert hookcore.queuejob(stagein=None, stageout=None, user="alice", config=None).reject is None


def test_load_config_errors(tmp_path):
    with pytest.raises(hookcore.ConfigError):
        hookcore.load_config(None)
    with pytest.raises(hookcore.ConfigError):
        hookcore.load_config(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(hookcore.ConfigError, match="not valid JSON"):
        hookcore.load_config(str(bad))


def test_load_config_roundtrip_and_cache(tmp_path):
    site = siteconfig.from_dict({"site": {"collection": SITE, "roots": ["/lus/{user}/"]}},
                                source="site.yaml")
    path = tmp_path / "cf.json"
    path.write_text(json.dumps({"package_path": "/x", "journal": "/j",
                                "site": siteconfig.to_hook_config(site)}))
    cfg = hookcore.load_config(str(path))
    assert cfg.site.site.collection == SITE and cfg.journal == "/j"
    assert hookcore.load_config(str(path)) is cfg      # cached by mtime+size
    path.write_text(json.dumps({"package_path": "/y", "journal": "/j2",
                                "site": siteconfig.to_hook_config(site)}))
    os.utime(path, (1, 1))
    assert hookcore.load_config(str(path)).journal == "/j2"


def test_modifyjob_revalidates_while_waiting(config):
    ok = hookcore.modifyjob(new_stagein="/lus/alice/other/@theta-dtn:/~/x/", new_stageout=None,
                            state=states.Stage.WAITING, job_state="H", owner="alice",
                            had_stagein=True, config=config)
    assert ok.reject is None
    bad = hookcore.modifyjob(new_stagein="garbage", new_stageout=None, state=states.Stage.WAITING,
                             job_state="H", owner="alice", had_stagein=True, config=config)
    assert bad.reject.startswith("stagein_globus: ")


def test_modifyjob_refused_after_staging_started(config):
    a = hookcore.modifyjob(new_stagein=GOOD, new_stageout=None, state=states.Stage.STAGING_IN,
                           job_state="H", owner="alice", had_stagein=True, config=config)
    assert a.reject and "staging has started" in a.reject


def test_modifyjob_adding_stagein_holds(config):
    a = hookcore.modifyjob(new_stagein=GOOD, new_stageout=None, state=None, job_state="Q",
                           owner="alice", had_stagein=False, config=config)
    assert a.add_system_hold and a.resources[states.RES_STATE] == states.Stage.WAITING


def test_modifyjob_agent_state_update_passes(config):
    assert hookcore.modifyjob(new_stagein=None, new_stageout=None, state=states.Stage.WAITING,
                              job_state="H", owner="alice", had_stagein=True,
                              config=None) is hookcore.ACCEPT


def test_runjob_guard():
    a = hookcore.runjob(stagein=GOOD, state=states.Stage.STAGING_IN, tasks="")
    assert a.reject and a.add_system_hold
    assert hookcore.runjob(stagein=GOOD, state=None, tasks=None).reject
    ok = hookcore.runjob(stagein=GOOD, state=states.Stage.STAGED_IN, tasks="t1+t2")
    assert ok.reject is None
    assert ok.env["GLOBUS_STAGEIN_TASKS"] == "t1:t2"
    assert ok.env["GLOBUS_STAGEIN_PATHS"] == "/lus/alice/in/"
    assert hookcore.runjob(stagein=None, state=None, tasks=None) is hookcore.ACCEPT


def test_runjob_subjob_uses_parent_state():
    assert hookcore.runjob(stagein=GOOD, state=None, tasks=None,
                           parent_state=states.Stage.STAGED_IN).reject is None


def test_merged_holds_order():
    assert hookcore.merged_holds(None) == "s"
    assert hookcore.merged_holds("u") == "su"
    assert hookcore.merged_holds("n") == "s"
    assert hookcore.merged_holds("ou") == "sou"


def test_state_letters():
    assert hookcore.state_letter(2) == "H" and hookcore.state_letter(9) == "F"
    assert hookcore.state_letter(None) is None


def test_project_rules_apply_at_qsub(tmp_path):
    site = siteconfig.from_dict({
        "site": {"collection": SITE, "roots": ["/lus/{user}/"]},
        "collections": {"theta-dtn": THETA},
        "credentials": {"mode": "client", "client_id": SITE, "client_secret_file": "/etc/s"},
        "policy": [{"projects": ["P42"], "allow": ["theta-dtn:/p42/"]}]}, source="site.yaml")
    cfg = hookcore.HookConfig(package_path="", site=site, journal="", raw={})
    value = "/lus/alice/in/@theta-dtn:/p42/in/"
    assert hookcore.queuejob(stagein=value, stageout=None, user="alice", config=cfg,
                             project="P42").reject is None
    refused = hookcore.queuejob(stagein=value, stageout=None, user="alice", config=cfg,
                                project="other")
    assert refused.reject and "not allowed for alice by site policy" in refused.reject

"""What hookcore hands the hook scripts for PBS (resource values, job
environment) is plain ``str``, not a ``str`` enum member: PBS's own ``pbs``
module is not ours to trust with a subclass."""
from pbs_globus_staging import hookcore, siteconfig, states

SITE = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
THETA = "08925f04-569f-11e7-bef8-22000b9a448b"
GOOD = "/lus/alice/in/@theta-dtn:/~/in/"


def _config(tmp_path):
    site = siteconfig.from_dict({"site": {"collection": SITE, "roots": ["/lus/{user}/"]},
                                 "collections": {"theta-dtn": THETA}}, source="site.yaml")
    return hookcore.HookConfig(package_path="", site=site, journal=str(tmp_path / "j.sqlite"),
                               raw={})


def _plain(mapping):
    return all(type(k) is str and type(v) is str for k, v in mapping.items())


def test_runjob_environment_is_plain_str():
    a = hookcore.runjob(stagein=GOOD, state=states.Stage.STAGED_IN, tasks="t1")
    assert a.reject is None and _plain(a.env), a.env
    assert a.env["GLOBUS_STAGEIN_STATE"] == "staged-in"


def test_queuejob_and_modifyjob_resources_are_plain_str(tmp_path):
    config = _config(tmp_path)
    q = hookcore.queuejob(stagein=GOOD, stageout=None, user="alice", config=config)
    assert q.resources == {"globus_stage_state": "waiting"} and _plain(q.resources)
    m = hookcore.modifyjob(new_stagein=GOOD, new_stageout=None, state="", job_state="Q",
                           owner="alice", had_stagein=False, config=config)
    assert m.add_system_hold and _plain(m.resources), m.resources

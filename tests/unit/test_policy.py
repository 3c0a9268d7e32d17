"""Site policy: roots, aliases, unlisted collections, client-credentials rules."""
from __future__ import annotations

import pytest

from pbs_globus_staging import policy
from pbs_globus_staging.errors import ConfigError, RequestError
from pbs_globus_staging.policy import ResolvedItem, check
from pbs_globus_staging.request import expand_manifests, parse
from pbs_globus_staging.siteconfig import from_dict

SITE = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
THETA = "08925f04-569f-11e7-bef8-22000b9a448b"
EAGLE = "05d2c76a-e867-4f67-aa57-76edeb0beda0"
OTHER = "11111111-2222-4333-8444-555555555555"
CLIENT = "2f8e9d7c-1b3a-4c5d-8e7f-6a5b4c3d2e1f"


def make_cfg(**over):
    data = {
        "site": {"collection": SITE, "roots": ["/lus/{user}/", "/home/{user}/"]},
        "collections": {"theta-dtn": THETA, "eagle": EAGLE},
    }
    data.update(over)
    return from_dict(data, source="site.yaml")


USER_CFG = make_cfg()
CLIENT_CFG = make_cfg(
    credentials={"mode": "client", "client_id": CLIENT, "client_secret_file": "/etc/s"},
    policy=[
        {"users": ["*"], "allow": ["theta-dtn:/projects/shared/{user}/"]},
        {"groups": ["climate"], "allow": ["eagle:/climate/"], "directions": ["in"]},
        {"projects": ["P42"], "allow": [f"{OTHER}:/p42/"]},
    ],
)


def ok(value, *, direction="in", user="alice", cfg=USER_CFG, **kw):
    return check(parse(value, direction=direction), user=user, cfg=cfg, **kw)


def refused(value, *, direction="in", user="alice", cfg=USER_CFG, **kw) -> str:
    with pytest.raises(RequestError) as ei:
        ok(value, direction=direction, user=user, cfg=cfg, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


# --- resolution --------------------------------------------------------------

def test_stagein_resolves_remote_to_site():
    r = ok("/lus/alice/in/@theta-dtn:/~/in/+/home/alice/a.dat@EAGLE:/data/a.dat")
    assert r.items == (
        ResolvedItem(THETA, "/~/in/", SITE, "/lus/alice/in/", True),
        ResolvedItem(EAGLE, "/data/a.dat", SITE, "/home/alice/a.dat", False),
    )
    assert r.request.items[0].collection == "theta-dtn"   # the user's words are kept
    assert r.mode == "user"


def test_stageout_resolves_site_to_remote():
    r = ok("/lus/alice/out/@theta-dtn:/res/", direction="out")
    assert r.items == (ResolvedItem(SITE, "/lus/alice/out/", THETA, "/res/", True),)


def test_listed_uuid_accepted_any_case():
    r = ok(f"/lus/alice/x@{THETA.upper()}:/x")
    assert r.items[0].source_collection == THETA


def test_by_collection_pair_groups_items_in_order():
    r = ok("/lus/alice/a@theta-dtn:/a+/lus/alice/b@eagle:/b+/lus/alice/c@theta-dtn:/c")
    groups = r.by_collection_pair()
    assert list(groups) == [(THETA, SITE), (EAGLE, SITE)]
    assert [i.source_path for i in groups[(THETA, SITE)]] == ["/a", "/c"]


def test_root_directory_itself_is_inside():
    assert ok("/lus/alice/@theta-dtn:/x/").items[0].destination_path == "/lus/alice/"
    assert ok("/lus/alice@theta-dtn:/x").items[0].destination_path == "/lus/alice"


# --- refusals ----------------------------------------------------------------

def test_path_outside_roots_names_users_own_roots():
    assert refused("/lus/bob/x@theta-dtn:/x") == (
        "stagein_globus: item 1: local path '/lus/bob/x' is outside the areas you may use; "
        "allowed for alice: /lus/alice/, /home/alice/")


def test_root_is_a_directory_not_a_string_prefix():
    assert "outside the areas" in refused("/lus/alice2/x@theta-dtn:/x")
    assert "outside the areas" in refused("/lus/alic@theta-dtn:/x")
    assert "outside the areas" in refused("/@theta-dtn:/", direction="out")


def test_unknown_alias_lists_close_ones_first():
    msg = refused("/lus/alice/x@thetadtn:/x")
    assert msg == ("stagein_globus: item 1: unknown collection 'thetadtn'; known collections: "
                   "theta-dtn, eagle (or a collection UUID)")


def test_unknown_alias_listing_is_bounded():
    cfg = make_cfg(collections={f"c{i}": f"{i:08d}-0000-4000-8000-000000000000" for i in range(9)})
    msg = refused("/lus/alice/x@zzz:/x", cfg=cfg)
    assert msg.endswith("known collections: c0, c1, c2, c3 (and 5 more) (or a collection UUID)")


def test_unlisted_uuid_refused_unless_allowed():
    assert refused(f"/lus/alice/x@{OTHER}:/x") == (
        f"stagein_globus: item 1: collection {OTHER} is not one of this site's collections; "
        "use one of: eagle, theta-dtn")
    cfg = make_cfg(collections={"theta-dtn": THETA, "allow_unlisted": True})
    assert ok(f"/lus/alice/x@{OTHER}:/x", cfg=cfg).items[0].source_collection == OTHER


def test_manifest_items_named_by_line_in_policy_errors(tmp_path):
    def read(path):
        return "/lus/alice/a@theta-dtn:/a\n/etc/shadow@theta-dtn:/b\n"

    req = expand_manifests(parse("manifest=/lus/alice/m", direction="in"), owner_uid=0,
                           read_file=read)
    with pytest.raises(RequestError) as ei:
        check(req, user="alice", cfg=USER_CFG)
    assert str(ei.value).startswith(
        "stagein_globus: manifest '/lus/alice/m' line 2: local path '/etc/shadow' is outside")


def test_alias_and_uuid_naming_one_destination():
    msg = refused(f"/lus/alice/a@theta-dtn:/x+/lus/alice/b@{THETA}:/x", direction="out")
    assert msg == ("stageout_globus: item 2 writes to the same destination as item 1; "
                   "give each item its own destination")


@pytest.mark.parametrize("user", ["", "..", "a/b", "{user}", "a\nb"])
def test_unusable_user_names(user):
    assert "cannot be used in a path" in refused("/lus/x/a@theta-dtn:/a", user=user)


def test_site_collection_must_be_configured():
    cfg = from_dict({"collections": {"theta-dtn": THETA}}, source="site.yaml")
    with pytest.raises(ConfigError, match="site.yaml: site.collection: must be set"):
        ok("/home/alice/a@theta-dtn:/a", cfg=cfg)


def test_user_mode_ignores_policy_rules_and_allows_home_and_tasks():
    r = ok("/lus/alice/a@theta-dtn:~/anything+task=1f2e3d4c-0000-11ee-8000-0242ac120002")
    assert r.items[0].source_path == "/~/anything"
    assert r.request.tasks


def test_resource_override():
    assert refused("/lus/bob/x@theta-dtn:/x", resource="Resource_List.si").startswith(
        "Resource_List.si: item 1")


# --- client credentials mode ----------------------------------------------------

def test_client_mode_allows_rule_prefix_with_user_placeholder():
    r = ok("/lus/alice/a/@theta-dtn:/projects/shared/alice/a/", cfg=CLIENT_CFG)
    assert r.items[0].source_path == "/projects/shared/alice/a/" and r.mode == "client"
    assert ok("/lus/alice/a/@theta-dtn:/projects/shared/alice/", cfg=CLIENT_CFG)


def test_client_mode_refuses_other_users_prefix():
    msg = refused("/lus/alice/a@theta-dtn:/projects/shared/bob/a", cfg=CLIENT_CFG)
    assert msg == ("stagein_globus: item 1: remote path '/projects/shared/bob/a' on 'theta-dtn' "
                   "is not allowed for alice by site policy; allowed: "
                   "theta-dtn:/projects/shared/alice/")
    assert "not allowed" in refused("/lus/alice/a@theta-dtn:/projects/shared/alice2/a",
                                    cfg=CLIENT_CFG)


def test_client_mode_refuses_home_paths():
    msg = refused("/lus/alice/a@theta-dtn:~/a", cfg=CLIENT_CFG)
    assert msg == ("stagein_globus: item 1: remote path '/~/a' is relative to a home directory, "
                   "which at this site is the shared service identity's; name the full path")


def test_client_mode_refuses_grafted_tasks():
    assert "grafting a task is not allowed" in refused(
        "task=1f2e3d4c-0000-11ee-8000-0242ac120002", cfg=CLIENT_CFG)


def test_client_mode_group_rule_and_direction():
    assert ok("/lus/alice/c/@eagle:/climate/run1/", cfg=CLIENT_CFG, groups=["climate"])
    # the climate rule is read-only
    msg = refused("/lus/alice/c/@eagle:/climate/run1/", direction="out", cfg=CLIENT_CFG,
                  groups=["climate"])
    assert msg.startswith("stageout_globus: item 1: remote path '/climate/run1/' on 'eagle' "
                          "is not allowed for alice by site policy")
    # without the group, eagle is not allowed at all
    assert "not allowed" in refused("/lus/alice/c/@eagle:/climate/run1/", cfg=CLIENT_CFG)


def test_client_mode_project_rule_lists_its_uuid():
    r = ok(f"/lus/alice/x@{OTHER}:/p42/x", cfg=CLIENT_CFG, project="P42")
    assert r.items[0].source_collection == OTHER
    assert "is not one of this site's collections" in refused(
        f"/lus/alice/x@{OTHER}:/p42/x", cfg=CLIENT_CFG, project="P7")


def test_client_mode_local_roots_still_apply():
    assert "outside the areas you may use" in refused(
        "/lus/bob/a@theta-dtn:/projects/shared/alice/a", cfg=CLIENT_CFG)


def test_client_mode_nothing_allowed_message():
    cfg = make_cfg(
        credentials={"mode": "client", "client_id": CLIENT, "client_secret_file": "/etc/s"},
        policy=[{"users": ["carol"], "allow": ["theta-dtn:/c/"]}])
    assert refused("/lus/alice/a@theta-dtn:/c/a", cfg=cfg).endswith(
        "allowed: nothing (ask your admins)")


def test_allowed_roots_helper():
    assert policy.allowed_roots(USER_CFG, "bob") == ("/lus/bob/", "/home/bob/")

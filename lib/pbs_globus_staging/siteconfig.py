"""The site configuration: YAML on disk, validated into frozen dataclasses.

Stdlib only (``yaml`` is imported inside ``load()`` alone): the event hooks get
a small JSON subset (``to_hook_config``) and rebuild a ``SiteConfig`` from it
with ``from_hook_config``, through the same validation as the YAML file.

Every error is a ``ConfigError`` naming the file and the key path, e.g.
``site.yaml: agent.poll_interval: must be a positive number of seconds or a
duration like 30s, 10m, 1.5h, 1h30m, 7d, 1w (got 'abc')``.  Unknown keys are errors: a
typo must not silently do nothing.
"""

from ._py36 import dataclasses
import difflib
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import request, units
from .states import Direction
from .errors import ConfigError

__all__ = [
    "SiteConfig", "Site", "Collections", "Credentials", "GlobusSettings", "AgentSettings",
    "PbsSettings", "JournalSettings", "Limits", "PolicyRule",
    "load", "from_dict", "default", "to_hook_config", "from_hook_config",
    "parse_duration", "HOOK_CONFIG_FORMAT", "STANDALONE_CYCLE_BUDGET",
]

HOOK_CONFIG_FORMAT = 1
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")


@dataclasses.dataclass(frozen=True)
class Site:
    collection: Optional[str] = None     # the site's own Globus collection (LOCAL side)
    name: str = "PBS site"
    roots: Tuple[str, ...] = ("/home/{user}/",)
    # Where the site collection's "/" is on this filesystem (a GCS collection's
    # base path): /lus/alice/in on disk is /alice/in on a collection rooted at /lus/.
    collection_root: str = "/"


@dataclasses.dataclass(frozen=True)
class Collections:
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)  # alias -> UUID
    allow_unlisted: bool = False         # may users name UUIDs that are not listed?
    # GCSv5 mapped (not high-assurance) collections: their data_access consent
    # goes into every Globus login/token (UUIDs; aliases resolved).
    data_access: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Credentials:
    mode: str = "user"                   # user | client
    client_id: Optional[str] = None
    client_secret_file: Optional[str] = None
    token_dir: str = "~{user}/.globus-staging"


@dataclasses.dataclass(frozen=True)
class GlobusSettings:
    transfer_url: Optional[str] = None   # None = the real Globus service
    auth_url: Optional[str] = None
    http_timeout: float = 30.0
    max_retries: int = 2


# The agent's run budget when cycle_budget is unset and no periodic hook gave
# one (``globus-staging agent --once`` by hand).
STANDALONE_CYCLE_BUDGET = 15.0


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    """Every agent setting and its one default: ``agent:`` in site.yaml is
    validated against these fields, and the agent reads them through
    ``Agent._agent(name)`` with no default of its own."""

    poll_interval: float = 2.0
    # One agent run; None = derived from the periodic hook (freq - 2 s), which keeps
    # the gap between runs -- and so the release lag -- to about two seconds.
    cycle_budget: Optional[float] = None
    orphan_grace: float = 3600.0
    fatal_fault_window: float = 600.0
    stagein_failure: str = "hold"        # hold | delete
    stageout_when: str = "ok"            # ok | always | notok
    stageout_retries: int = 3
    default_deadline: float = 7 * 86400.0
    max_tasks_per_identity: int = 3
    # Unfinished tasks per identity, INACTIVE and paused ones too: kept below the
    # pending-task limit Globus sets per user (100: docs.globus.org FAQ, "Are there
    # any limits on using the file transfer service?"; docs/globus-fidelity.md).
    max_pending_tasks: int = 100
    batch_window: float = 0.0
    batch_max_items: int = 100
    python: str = "/usr/bin/python3"
    retry_delay: float = 60.0            # first wait before a failed stage-out is retried (doubles)
    rescan_interval: float = 10.0        # full PBS re-read inside one run; polls in between
    slow_after: float = 3600.0           # no progress this long -> the `slow` alert
    stage_ahead: int = 0                 # just-in-time: stage only the N front jobs per queue (0 = all)
    api_rate: float = 10.0               # Globus API calls per second per identity, at most
    history_days: float = 30.0           # keep finished jobs' history (for `show`) this long
    max_progress_comments: int = 200     # job-comment progress updates per full pass (qalter)
    max_history_lookups: int = 50        # ended jobs per pass looked up in PBS history
    # One long-lived agent (`agent --serve`) that the periodic hook only keeps alive,
    # woken by the hooks: reacts in about a second.  false: the periodic hook runs
    # one bounded `agent --once` per period instead (reacts within a period).
    serve: bool = True
    poll_fast: float = 1.0               # Globus poll pace while a task may end any moment


@dataclasses.dataclass(frozen=True)
class PbsSettings:
    exec: Optional[str] = None           # None = from /etc/pbs.conf or the environment
    home: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class JournalSettings:
    path: Optional[str] = None           # None = PBS_HOME/globus_staging/journal.sqlite


@dataclasses.dataclass(frozen=True)
class Limits:
    """The request grammar's limits; the defaults are the grammar's own (``request``)."""
    max_value_length: int = request.MAX_VALUE_LENGTH
    max_items: int = request.MAX_ITEMS
    manifest_max_bytes: int = request.MANIFEST_MAX_BYTES
    manifest_max_items: int = request.MANIFEST_MAX_ITEMS


@dataclasses.dataclass(frozen=True)
class PolicyRule:
    """Client-credentials mode: who (any of users/groups/projects; '*' = all)
    may name which remote paths (``allow``: 'alias-or-uuid:/prefix/')."""

    allow: Tuple[str, ...]
    users: Tuple[str, ...] = ()
    groups: Tuple[str, ...] = ()
    projects: Tuple[str, ...] = ()
    directions: Tuple[str, ...] = Direction.values()


@dataclasses.dataclass(frozen=True)
class SiteConfig:
    site: Site = Site()
    collections: Collections = dataclasses.field(default_factory=Collections)
    credentials: Credentials = Credentials()
    globus: GlobusSettings = GlobusSettings()
    agent: AgentSettings = AgentSettings()
    pbs: PbsSettings = PbsSettings()
    journal: JournalSettings = JournalSettings()
    limits: Limits = Limits()
    policy: Tuple[PolicyRule, ...] = ()
    alerts: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # validated by alerts
    source: str = "<defaults>"


# ---------------------------------------------------------------------------
# Validation helpers

def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _V:
    """Validation context: knows the source name for messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str, *, got: Any = dataclasses.MISSING) -> ConfigError:
        text = f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
        if got is not dataclasses.MISSING:
            text += f" (got {_show(got)})"
        return ConfigError(" ".join(text.split()))

    def mapping(self, value: Any, path: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping of keys to values", got=value)
        for k in value:
            if not isinstance(k, str):
                raise self.fail(path, "keys must be text", got=k)
        return value

    def known(self, data: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(where, f"unknown key; {hint}allowed keys: {', '.join(allowed)}")

    def string(self, value: Any, path: str, *, optional: bool = False,
               choices: Sequence[str] = ()) -> Optional[str]:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be " + ("one of " + " | ".join(choices) if choices
                                                else "a non-empty string"), got=value)
        if choices and value not in choices:
            raise self.fail(path, "must be one of " + " | ".join(choices), got=value)
        return value

    def abspath(self, value: Any, path: str, *, optional: bool = False) -> Optional[str]:
        s = self.string(value, path, optional=optional)
        if s is None:
            return None
        if not s.startswith("/") or "\x00" in s:
            raise self.fail(path, "must be an absolute path", got=value)
        return s

    def uuid(self, value: Any, path: str, *, optional: bool = False) -> Optional[str]:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not _UUID_RE.match(value):
            raise self.fail(path, "must be a Globus collection or client UUID", got=value)
        return value.lower()

    def url(self, value: Any, path: str) -> Optional[str]:
        if value is None:
            return None
        if not isinstance(value, str) or not re.match(r"https?://[^\s/]+", value):
            raise self.fail(path, "must be null or an http(s):// URL", got=value)
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false", got=value)
        return value

    def integer(self, value: Any, path: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
            raise self.fail(path, f"must be {what}", got=value)
        return value

    def number(self, value: Any, path: str) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise self.fail(path, "must be a positive number", got=value)
        return float(value)

    def duration(self, value: Any, path: str, *, allow_zero: bool = False) -> float:
        secs = parse_duration(value)
        if secs is None or secs < 0 or (secs == 0 and not allow_zero):
            kind = "a number of seconds (0 or more)" if allow_zero else \
                "a positive number of seconds"
            raise self.fail(path, f"must be {kind} or a duration like "
                            f"{units.DURATION_EXAMPLES}", got=value)
        return secs

    def strings(self, value: Any, path: str) -> Tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(path, "must be a list of strings", got=value)
        out = []
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v:
                raise self.fail(f"{path}[{i}]", "must be a non-empty string", got=v)
            out.append(v)
        return tuple(out)


def parse_duration(value: Any) -> Optional[float]:
    """Seconds from the one duration grammar (``units.parse_duration``); None if invalid."""
    try:
        return units.parse_duration(value)
    except units.DurationError:
        return None


def _template(v: _V, value: Any, path: str, *, directory: bool) -> str:
    """A path that may hold {user}: absolute, no '..', no other placeholder."""
    s = v.string(value, path)
    assert s is not None
    if not s.startswith("/"):
        raise v.fail(path, "must be an absolute path", got=value)
    if ".." in s.split("/"):
        raise v.fail(path, "must not contain '..'", got=value)
    leftover = s.replace("{user}", "")
    if "{" in leftover or "}" in leftover:
        raise v.fail(path, "may use only the {user} placeholder", got=value)
    if directory and not s.endswith("/"):
        s += "/"     # a root names a directory; '/lus/alice' must not admit '/lus/alice2'
    return s


# ---------------------------------------------------------------------------
# Sections

_TOP = ("site", "collections", "credentials", "globus", "agent", "pbs", "journal",
        "limits", "policy", "alerts")


def _collection_root(v: "_V", value: Any) -> str:
    root = v.abspath(value, "site.collection_root")
    if not root or not root.endswith("/"):
        raise v.fail("site.collection_root", "must be an absolute directory ending in '/'",
                     got=value)
    return root


def from_dict(data: Any, *, source: str) -> SiteConfig:
    """Validate a parsed config document (``None`` = all defaults)."""
    v = _V(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise v.fail("", "the configuration must be a mapping of sections "
                     f"({', '.join(_TOP)})", got=data)
    data = v.mapping(data, "")
    v.known(data, "", _TOP)

    s = v.mapping(data.get("site"), "site")
    v.known(s, "site", ("collection", "name", "roots", "collection_root"))
    roots_raw = s.get("roots", list(Site.roots))
    if not isinstance(roots_raw, list) or not roots_raw:
        raise v.fail("site.roots", "must be a non-empty list of absolute paths", got=roots_raw)
    site = Site(
        collection=v.uuid(s.get("collection"), "site.collection", optional=True),
        collection_root=_collection_root(v, s.get("collection_root", "/")),
        name=v.string(s.get("name", Site.name), "site.name") or Site.name,
        roots=tuple(_template(v, r, f"site.roots[{i}]", directory=True)
                    for i, r in enumerate(roots_raw)),
    )

    c = v.mapping(data.get("collections"), "collections")
    aliases: Dict[str, str] = {}
    allow_unlisted = False
    data_access_raw: Any = []
    for key, val in c.items():
        path = f"collections.{key}"
        if key == "allow_unlisted":
            allow_unlisted = v.boolean(val, path)
            continue
        if key == "data_access":
            data_access_raw = val
            continue
        if not _ALIAS_RE.match(key) or _UUID_RE.match(key):
            raise v.fail(path, "an alias must start with a letter and use only letters, "
                         "digits, '_', '.', '-' (at most 64)")
        uuid = v.uuid(val, path)
        assert uuid is not None
        aliases[key] = uuid
    lowered: Dict[str, str] = {}
    for key in aliases:
        if key.lower() in lowered:
            raise v.fail(f"collections.{key}", "differs from alias "
                         f"{lowered[key.lower()]!r} only in case; users would confuse them")
        lowered[key.lower()] = key
    if not isinstance(data_access_raw, list):
        raise v.fail("collections.data_access", "must be a list of collection aliases or "
                     "UUIDs (the GCSv5 mapped collections)", got=data_access_raw)
    data_access = []
    for i, entry in enumerate(data_access_raw):
        name = str(entry) if isinstance(entry, str) else ""
        if name in aliases:
            data_access.append(aliases[name].lower())
        elif _UUID_RE.match(name):
            data_access.append(name.lower())
        else:
            raise v.fail(f"collections.data_access[{i}]", "expected an alias defined "
                         "under collections: or a collection UUID", got=entry)
    collections = Collections(aliases=aliases, allow_unlisted=allow_unlisted,
                              data_access=tuple(dict.fromkeys(data_access)))

    cr = v.mapping(data.get("credentials"), "credentials")
    v.known(cr, "credentials", ("mode", "client_id", "client_secret_file", "token_dir"))
    mode = v.string(cr.get("mode", "user"), "credentials.mode", choices=("user", "client"))
    token_dir = v.string(cr.get("token_dir", Credentials.token_dir), "credentials.token_dir")
    assert token_dir is not None
    if "{user}" not in token_dir:
        raise v.fail("credentials.token_dir", "must contain {user}: each user's token "
                     "lives in their own place", got=token_dir)
    credentials = Credentials(
        mode=mode or "user",
        client_id=v.uuid(cr.get("client_id"), "credentials.client_id", optional=True),
        client_secret_file=v.abspath(cr.get("client_secret_file"),
                                     "credentials.client_secret_file", optional=True),
        token_dir=token_dir,
    )
    if credentials.mode == "client":
        if credentials.client_id is None:
            raise v.fail("credentials.client_id", "is required when mode is client")
        if credentials.client_secret_file is None:
            raise v.fail("credentials.client_secret_file", "is required when mode is client "
                         "(a root-only file holding the client secret)")

    g = v.mapping(data.get("globus"), "globus")
    v.known(g, "globus", ("transfer_url", "auth_url", "http_timeout", "max_retries"))
    globus = GlobusSettings(
        transfer_url=v.url(g.get("transfer_url"), "globus.transfer_url"),
        auth_url=v.url(g.get("auth_url"), "globus.auth_url"),
        http_timeout=v.duration(g.get("http_timeout", GlobusSettings.http_timeout),
                                "globus.http_timeout"),
        max_retries=v.integer(g.get("max_retries", GlobusSettings.max_retries),
                              "globus.max_retries", minimum=0),
    )

    a = v.mapping(data.get("agent"), "agent")
    fields = {f.name: f.default for f in dataclasses.fields(AgentSettings)}
    v.known(a, "agent", tuple(fields))

    def get(key: str) -> Any:
        return a.get(key, fields[key])

    agent = AgentSettings(
        poll_interval=v.duration(get("poll_interval"), "agent.poll_interval"),
        cycle_budget=(None if get("cycle_budget") is None
                      else v.duration(get("cycle_budget"), "agent.cycle_budget")),
        orphan_grace=v.duration(get("orphan_grace"), "agent.orphan_grace", allow_zero=True),
        fatal_fault_window=v.duration(get("fatal_fault_window"), "agent.fatal_fault_window",
                                      allow_zero=True),
        stagein_failure=v.string(get("stagein_failure"), "agent.stagein_failure",
                                 choices=("hold", "delete")) or "hold",
        stageout_when=v.string(get("stageout_when"), "agent.stageout_when",
                               choices=("ok", "always", "notok")) or "ok",
        stageout_retries=v.integer(get("stageout_retries"), "agent.stageout_retries",
                                   minimum=0),
        default_deadline=v.duration(get("default_deadline"), "agent.default_deadline"),
        max_tasks_per_identity=v.integer(get("max_tasks_per_identity"),
                                         "agent.max_tasks_per_identity", minimum=1),
        max_pending_tasks=v.integer(get("max_pending_tasks"), "agent.max_pending_tasks",
                                    minimum=1),
        batch_window=v.duration(get("batch_window"), "agent.batch_window", allow_zero=True),
        batch_max_items=v.integer(get("batch_max_items"), "agent.batch_max_items", minimum=1),
        python=v.abspath(get("python"), "agent.python") or AgentSettings.python,
        retry_delay=v.duration(get("retry_delay"), "agent.retry_delay", allow_zero=True),
        rescan_interval=v.duration(get("rescan_interval"), "agent.rescan_interval"),
        slow_after=v.duration(get("slow_after"), "agent.slow_after"),
        stage_ahead=v.integer(get("stage_ahead"), "agent.stage_ahead", minimum=0),
        api_rate=v.number(get("api_rate"), "agent.api_rate"),
        history_days=v.number(get("history_days"), "agent.history_days"),
        max_progress_comments=v.integer(get("max_progress_comments"),
                                        "agent.max_progress_comments", minimum=0),
        max_history_lookups=v.integer(get("max_history_lookups"), "agent.max_history_lookups",
                                      minimum=1),
        serve=v.boolean(get("serve"), "agent.serve"),
        poll_fast=v.duration(get("poll_fast"), "agent.poll_fast"),
    )

    p = v.mapping(data.get("pbs"), "pbs")
    v.known(p, "pbs", ("exec", "home"))
    pbs = PbsSettings(exec=v.abspath(p.get("exec"), "pbs.exec", optional=True),
                      home=v.abspath(p.get("home"), "pbs.home", optional=True))

    j = v.mapping(data.get("journal"), "journal")
    v.known(j, "journal", ("path",))
    journal = JournalSettings(path=v.abspath(j.get("path"), "journal.path", optional=True))

    li = v.mapping(data.get("limits"), "limits")
    lfields = {f.name: f.default for f in dataclasses.fields(Limits)}
    v.known(li, "limits", tuple(lfields))
    limits = Limits(**{k: v.integer(li.get(k, d), f"limits.{k}", minimum=1)
                       for k, d in lfields.items()})

    policy = _policy(v, data.get("policy"), aliases)
    if credentials.mode == "client" and not policy:
        # Client mode without rules would let every user name every path the
        # service identity can reach: invariant 3 forbids that.
        raise v.fail("policy", "client credentials mode needs at least one policy rule "
                     "saying which users may name which paths")

    alerts = data.get("alerts")
    if alerts is None:
        alerts = {}
    if not isinstance(alerts, dict):
        raise v.fail("alerts", "must be a mapping", got=alerts)

    return SiteConfig(site=site, collections=collections, credentials=credentials,
                      globus=globus, agent=agent, pbs=pbs, journal=journal, limits=limits,
                      policy=policy, alerts=dict(alerts), source=source)


def _policy(v: _V, raw: Any, aliases: Mapping[str, str]) -> Tuple[PolicyRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise v.fail("policy", "must be a list of rules like {users: [alice], "
                     "allow: ['theta-dtn:/projects/{user}/']}", got=raw)
    rules: List[PolicyRule] = []
    for i, r in enumerate(raw):
        path = f"policy[{i}]"
        r = v.mapping(r, path)
        v.known(r, path, ("users", "groups", "projects", "allow", "directions"))
        users = v.strings(r.get("users"), f"{path}.users")
        groups = v.strings(r.get("groups"), f"{path}.groups")
        projects = v.strings(r.get("projects"), f"{path}.projects")
        if not (users or groups or projects):
            raise v.fail(path, "must name users, groups or projects (users: ['*'] "
                         "means everyone)")
        allow_raw = v.strings(r.get("allow"), f"{path}.allow")
        if not allow_raw:
            raise v.fail(f"{path}.allow", "must list at least one "
                         "'alias-or-uuid:/path/prefix/'")
        allow = []
        for k, entry in enumerate(allow_raw):
            epath = f"{path}.allow[{k}]"
            coll, sep, prefix = entry.partition(":")
            if not sep:
                raise v.fail(epath, "must look like 'alias-or-uuid:/path/prefix/'", got=entry)
            if _UUID_RE.match(coll):
                coll = coll.lower()
            elif coll not in aliases:
                known = ", ".join(sorted(aliases)[:5]) or "none defined"
                raise v.fail(epath, f"collection {coll!r} is not a UUID or an alias under "
                             f"collections: (known: {known})", got=entry)
            prefix = _template(v, prefix, epath, directory=True)
            allow.append(f"{coll}:{prefix}")
        dirs = v.strings(r.get("directions", list(Direction.values())), f"{path}.directions")
        for k, dname in enumerate(dirs):
            if dname not in Direction.values():
                raise v.fail(f"{path}.directions[{k}]", "must be in or out", got=dname)
        rules.append(PolicyRule(allow=tuple(allow), users=users, groups=groups,
                                projects=projects, directions=dirs))
    return tuple(rules)


def default() -> SiteConfig:
    """All defaults (user credentials mode, real Globus, roots /home/{user}/)."""
    return from_dict({}, source="<defaults>")


def load(path: str) -> SiteConfig:
    """Read and validate a YAML site config file."""
    name = str(path)
    try:
        with open(name, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ConfigError(f"{name}: cannot read the site configuration ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: is not UTF-8 text") from None

    import yaml  # lazily: the event hooks never read YAML

    class _Loader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (the later one would silently win)."""

    def _mapping(loader: Any, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(f"{name}: line {mark.line + 1}: key {key!r} appears twice")
            try:
                seen.add(key)
            except TypeError:
                pass
        return loader.construct_mapping(node, deep=deep)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise ConfigError(" ".join(f"{name}: YAML syntax error: {where}{problem}".split())) \
            from None
    return from_dict(data, source=name)


# ---------------------------------------------------------------------------
# The hooks' JSON subset

def to_hook_config(cfg: SiteConfig) -> Dict[str, Any]:
    """What the event hooks need, JSON-serialisable and in the YAML's own shape,
    so ``from_hook_config`` validates it the same way.  Holds no secret (only
    the path of the client secret file)."""
    coll: Dict[str, Any] = dict(cfg.collections.aliases)
    coll["allow_unlisted"] = cfg.collections.allow_unlisted
    if cfg.collections.data_access:
        coll["data_access"] = list(cfg.collections.data_access)
    return {
        "format": HOOK_CONFIG_FORMAT,
        "source": cfg.source,
        "site": {"collection": cfg.site.collection, "name": cfg.site.name,
                 "collection_root": cfg.site.collection_root,
                 "roots": list(cfg.site.roots)},
        "collections": coll,
        "credentials": {"mode": cfg.credentials.mode, "client_id": cfg.credentials.client_id,
                        "client_secret_file": cfg.credentials.client_secret_file,
                        "token_dir": cfg.credentials.token_dir},
        "agent": {"stagein_failure": cfg.agent.stagein_failure,
                  "stageout_when": cfg.agent.stageout_when,
                  "default_deadline": cfg.agent.default_deadline,
                  "serve": cfg.agent.serve},
        "pbs": {"exec": cfg.pbs.exec, "home": cfg.pbs.home},
        "journal": {"path": cfg.journal.path},
        "limits": dataclasses.asdict(cfg.limits),
        "policy": [{"users": list(r.users), "groups": list(r.groups),
                    "projects": list(r.projects), "allow": list(r.allow),
                    "directions": list(r.directions)} for r in cfg.policy],
    }


def from_hook_config(d: Any) -> SiteConfig:
    """Rebuild (and re-validate) a ``SiteConfig`` from ``to_hook_config`` output.
    Settings not in the subset take their defaults."""
    if not isinstance(d, dict):
        raise ConfigError(f"hook config: must be a JSON object (got {_show(d)})")
    data = dict(d)
    fmt = data.pop("format", None)
    source = data.pop("source", None)
    name = f"hook config (from {source})" if isinstance(source, str) else "hook config"
    if fmt != HOOK_CONFIG_FORMAT:
        raise ConfigError(f"{name}: format: must be {HOOK_CONFIG_FORMAT} (got {_show(fmt)}); "
                          "re-run the installer to write a current hook config")
    cfg = from_dict(data, source=name)
    # Later messages (policy, the agent) should name the file the admin edits.
    return dataclasses.replace(cfg, source=source) if isinstance(source, str) else cfg

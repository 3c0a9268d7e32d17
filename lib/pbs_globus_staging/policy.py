"""Site policy: which paths on which collections a user may name.

Stdlib only.  Checked at qsub (queuejob hook) and again by the agent right
before submission, because the site config may have changed in between.

This is a string check: paths are not resolved on this host (no symlink
resolution, no stat).  The filesystem itself is checked by Globus, as the user
in per-user credentials mode.  In client-credentials mode Globus acts as the
site's one service identity, so the ``policy:`` rules are what keep one user
out of another's data (invariant 3), and they must be strict: home-relative
remote paths and grafted tasks are refused there.
"""

from ._py36 import dataclasses
import difflib
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError, RequestError
from .request import Direction, Item, StagingRequest, _q, is_uuid, resource_name
from .siteconfig import PolicyRule, SiteConfig

__all__ = ["ResolvedItem", "ResolvedRequest", "check", "allowed_roots", "host_groups"]

_SHOW_MAX = 4     # how many aliases / roots / prefixes a message lists


@dataclasses.dataclass(frozen=True)
class ResolvedItem:
    source_collection: str
    source_path: str
    destination_collection: str
    destination_path: str
    recursive: bool


@dataclasses.dataclass(frozen=True)
class ResolvedRequest:
    request: StagingRequest
    items: Tuple[ResolvedItem, ...]
    mode: str = "user"          # credentials mode the request was checked for

    def by_collection_pair(self) -> Dict[Tuple[str, str], Tuple[ResolvedItem, ...]]:
        """Items grouped by (source, destination) collection: one Globus task
        each, in first-seen order."""
        groups: Dict[Tuple[str, str], List[ResolvedItem]] = {}
        for it in self.items:
            groups.setdefault((it.source_collection, it.destination_collection), []).append(it)
        return {k: tuple(v) for k, v in groups.items()}


def _usable_user(user: str) -> bool:
    return bool(user) and "/" not in user and user not in (".", "..") and \
        "{" not in user and "}" not in user and user.isprintable()


def _expand(template: str, user: str) -> str:
    return template.replace("{user}", user)


def allowed_roots(cfg: SiteConfig, user: str) -> Tuple[str, ...]:
    """The local path prefixes ``user`` may name (``{user}`` expanded)."""
    return tuple(_expand(r, user) for r in cfg.site.roots)


def _under(path: str, prefix: str) -> bool:
    """``prefix`` ends with '/'; the directory itself counts as inside."""
    return path.startswith(prefix) or path + "/" == prefix


def _listing(values: Sequence[str]) -> str:
    shown = ", ".join(values[:_SHOW_MAX])
    if len(values) > _SHOW_MAX:
        shown += f" (and {len(values) - _SHOW_MAX} more)"
    return shown


def _on_collection(path: str, root: str) -> Optional[str]:
    """A local path as the site collection names it (its base path stripped)."""
    if root == "/":
        return path
    if not _under(path, root):
        return None
    return "/" + path[len(root):]


def _where(item: Item) -> str:
    return item.origin or "an item"


def host_groups(user: str) -> Tuple[str, ...]:
    """The groups ``user`` belongs to in this host's group database (primary
    first), as PBS itself sees them; () for an unknown user.

    Used for ``groups:`` policy rules when the caller does not pass groups: a
    group a user merely *claims* (``qsub -W group_list``) must not widen what
    they may name, so only real membership counts."""
    try:
        import grp
        import pwd
        pw = pwd.getpwnam(user)
        gids = os.getgrouplist(user, pw.pw_gid)
    except (KeyError, ImportError, OSError):
        return ()
    names: List[str] = []
    for gid in [pw.pw_gid] + [g for g in gids if g != pw.pw_gid]:
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        if name not in names:
            names.append(name)
    return tuple(names)


def check(req: StagingRequest, *, user: str, groups: Optional[Sequence[str]] = None,
          project: Optional[str] = None, cfg: SiteConfig,
          resource: Optional[str] = None) -> ResolvedRequest:
    """Resolve aliases and check ``req`` against the site's rules for ``user``.

    ``groups=None`` means "the user's groups on this host" (looked up only
    when a client-mode rule names groups).  Raises ``RequestError`` (one line,
    what the user must change) or ``ConfigError`` when the site config cannot
    serve any request.
    """
    d = Direction(req.direction)
    res = resource or resource_name(d)

    def fail(msg: str) -> RequestError:
        return RequestError(msg, resource=res)

    site = cfg.site.collection
    if site is None:
        raise ConfigError(f"{cfg.source}: site.collection: must be set to the site's "
                          "Globus collection UUID before jobs can stage data")
    if not _usable_user(user):
        raise fail(f"the job owner {_q(user)} cannot be used in a path")
    client = cfg.credentials.mode == "client"
    roots = allowed_roots(cfg, user)
    if client and groups is None:
        groups = host_groups(user) if any(r.groups for r in cfg.policy) else ()
    rules = _rules_for(cfg.policy, user=user, groups=groups or (), project=project,
                       direction=d.value) if client else ()
    allowed = _allowed(rules, cfg, user) if client else ()

    if client and req.tasks:
        raise fail(f"task={req.tasks[0]} cannot be used here: this site runs transfers "
                   "under one shared Globus identity, so grafting a task is not allowed; "
                   "name the items instead")

    aliases = cfg.collections.aliases
    listed = set(aliases.values())
    listed.update(uuid for uuid, _ in allowed)   # a rule naming a UUID lists it
    lowered = {k.lower(): v for k, v in aliases.items()}
    out: List[ResolvedItem] = []
    seen_dest: Dict[Tuple[str, str], str] = {}
    for item in req.items:
        where = _where(item)
        coll = item.collection
        if is_uuid(coll):
            uuid = coll.lower()
            if uuid not in listed and not cfg.collections.allow_unlisted:
                raise fail(f"{where}: collection {coll} is not one of this site's "
                           "collections; use one of: "
                           + (_listing(sorted(aliases)) or "(none configured; ask your admins)"))
        else:
            found = aliases.get(coll) or lowered.get(coll.lower())
            if found is None:
                close = difflib.get_close_matches(coll, list(aliases), n=_SHOW_MAX, cutoff=0.5)
                names = close + [a for a in sorted(aliases) if a not in close]
                raise fail(f"{where}: unknown collection {_q(coll)}; known collections: "
                           + (_listing(names) or "none (ask your admins)")
                           + " (or a collection UUID)")
            uuid = found

        if not any(_under(item.local, r) for r in roots):
            raise fail(f"{where}: local path {_q(item.local)} is outside the areas you may "
                       f"use; allowed for {user}: {_listing(list(roots))}")

        if client:
            if item.remote.startswith("/~/"):
                raise fail(f"{where}: remote path {_q(item.remote)} is relative to a home "
                           "directory, which at this site is the shared service identity's; "
                           "name the full path")
            if not any(c == uuid and _under(item.remote, p) for c, p in allowed):
                shown = [_display(c, p, aliases) for c, p in allowed]
                raise fail(f"{where}: remote path {_q(item.remote)} on {_q(coll)} is not "
                           f"allowed for {user} by site policy; allowed: "
                           + (_listing(shown) or "nothing (ask your admins)"))

        local = _on_collection(item.local, cfg.site.collection_root)
        if local is None:
            raise fail(f"{where}: local path {_q(item.local)} is not on the site's Globus "
                       f"collection (which starts at {cfg.site.collection_root})")
        if d is Direction.IN:
            ri = ResolvedItem(uuid, item.remote, site, local, item.recursive)
        else:
            ri = ResolvedItem(site, local, uuid, item.remote, item.recursive)
        # An alias and its UUID name one destination twice; the parser cannot see it.
        dest = (ri.destination_collection, ri.destination_path)
        prev = seen_dest.get(dest)
        if prev is not None:
            raise fail(f"{where} writes to the same destination as {prev}; "
                       "give each item its own destination")
        seen_dest[dest] = where
        out.append(ri)

    return ResolvedRequest(request=req, items=tuple(out), mode=cfg.credentials.mode)


def _rules_for(rules: Sequence[PolicyRule], *, user: str, groups: Sequence[str],
               project: Optional[str], direction: str) -> Tuple[PolicyRule, ...]:
    gset = set(groups)
    picked = []
    for r in rules:
        if direction not in r.directions:
            continue
        if ("*" in r.users or user in r.users
                or "*" in r.groups or gset.intersection(r.groups)
                or (project is not None and ("*" in r.projects or project in r.projects))):
            picked.append(r)
    return tuple(picked)


def _allowed(rules: Sequence[PolicyRule], cfg: SiteConfig, user: str) -> Tuple[Tuple[str, str], ...]:
    pairs: List[Tuple[str, str]] = []
    for r in rules:
        for entry in r.allow:
            coll, _, prefix = entry.partition(":")
            uuid = coll if is_uuid(coll) else cfg.collections.aliases.get(coll)
            if uuid is None:      # validated at load time; a stale hook config is the admin's
                continue
            pair = (uuid, _expand(prefix, user))
            if pair not in pairs:
                pairs.append(pair)
    return tuple(pairs)


def _display(uuid: str, prefix: str, aliases: Mapping[str, str]) -> str:
    for name, u in aliases.items():
        if u == uuid:
            return f"{name}:{prefix}"
    return f"{uuid}:{prefix}"

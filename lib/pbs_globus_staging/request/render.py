"""``render()`` a request back into its canonical value, and the request's key."""

import hashlib
import json

from .model import Direction, Item, StagingRequest

_ESCAPES = {c: f"%{ord(c):02X}" for c in "%+@, \"'\\"}


def _esc(path: str) -> str:
    if not any(c in _ESCAPES for c in path):
        return path
    return "".join(_ESCAPES.get(c, c) for c in path)


def _render_item(item: Item) -> str:
    return f"{_esc(item.local)}@{item.collection}:{_esc(item.remote)}"


def render(req: StagingRequest) -> str:
    """The canonical value: items, task=, manifest=, then options in a fixed
    order.  ``parse(render(r), direction=r.direction) == r`` for every valid r."""
    parts = [_render_item(i) for i in req.items]
    parts += [f"task={t}" for t in req.tasks]
    parts += [f"manifest={_esc(m)}" for m in req.manifests]
    o = req.options
    if o.sync_level is not None:
        parts.append(f"sync={o.sync_level}")
    if o.verify_checksum is not None:
        parts.append("checksum=" + ("yes" if o.verify_checksum else "no"))
    if o.deadline is not None:
        parts.append(f"deadline={o.deadline.form}")
    if o.onfail is not None:
        parts.append(f"onfail={o.onfail}")
    if o.cleanup is not None:
        parts.append(f"cleanup={_esc(o.cleanup)}")
    if o.when is not None:
        parts.append(f"when={o.when}")
    return "+".join(parts)


def request_key(req: StagingRequest, *, identity: str) -> str:
    """A stable sha256 hex key of (identity, direction, canonical request), used
    to recognise the same request across jobs and agent restarts.  Manifest
    paths are part of it, so give it the expanded request."""
    body = json.dumps([1, identity, Direction(req.direction).value, render(req)],
                      ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()

"""The transfer engine: expands items, copies files at a byte rate, records faults.

Globus semantics kept here (``reference/globus-transfer.md``):
- a missing source or a permission problem does not fail a task; the item
  retries with ``faults`` growing, unless ``skip_source_errors`` covers it;
- at most N tasks per identity move at once, the rest show ``Queued``; tasks
  backing off from an error, paused or INACTIVE do not hold a slot;
- at the deadline the task goes FAILED with fatal_error EXPIRED.

Everything runs under the emulator's lock, one tick at a time.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from .fsaccess import Files
from .model import (ACTIVE, FAILED, INACTIVE, NICE_DESCRIPTIONS, SUCCEEDED, Collection, FileJob,
                    Item, Task, iso)

if TYPE_CHECKING:  # pragma: no cover
    from .core import GlobusEmulator

CHUNK = 1 << 20
MAX_BYTES_PER_TICK = 8 << 20          # keeps the lock short even at "unlimited" rates
SKIPPABLE = frozenset({"FILE_NOT_FOUND", "PERMISSION_DENIED"})
DEFAULT_DEADLINE = 24 * 3600.0
PROGRESS_DEADLINE = 72 * 3600.0


class PathRefused(Exception):
    """A path that would leave its collection's directory."""


def normalize(path: str) -> str:
    """Collection-absolute, ``..``-free form.  ``~`` is the collection root here:
    the emulator has no per-user home directories."""
    p = path
    if p in ("~", "/~"):
        p = "/"
    elif p.startswith("/~/"):
        p = p[2:]
    elif p.startswith("~/"):
        p = p[1:]
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if ".." in parts:
        raise PathRefused(path)
    return "/" + "/".join(parts)


def local_path(collection: Collection, norm: str) -> Path:
    """The real path for a normalized collection path; symlinks leaving the
    collection's directory are refused."""
    root = collection.directory.resolve()
    target = (root / norm.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        raise PathRefused(norm)
    return target


def _inside(collection: Collection, path: Path) -> bool:
    root = collection.directory.resolve()
    real = path.resolve()
    return real == root or root in real.parents


def _errno_code(exc: OSError) -> str:
    return {
        errno.ENOENT: "FILE_NOT_FOUND",
        errno.EACCES: "PERMISSION_DENIED",
        errno.EPERM: "PERMISSION_DENIED",
        errno.ENOSPC: "NO_SPACE_LEFT",
        errno.EDQUOT: "QUOTA_EXCEEDED",
        errno.EISDIR: "IS_A_DIRECTORY",
        errno.ENOTDIR: "NOT_A_DIRECTORY",
    }.get(exc.errno or 0, "ENDPOINT_ERROR")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class Engine:
    def __init__(self, emu: "GlobusEmulator") -> None:
        self.emu = emu

    # -- scheduling -------------------------------------------------------
    def tick(self, now: float, dt: float) -> None:
        by_owner: Dict[str, List[Task]] = {}
        for task in self.emu._tasks.values():
            if not task.finished:
                by_owner.setdefault(task.owner_id, []).append(task)
        for owner, tasks in by_owner.items():
            # tasks already moving keep precedence over newer queued ones
            tasks.sort(key=lambda t: (not t.started, t.request_time))
            limit = self.emu._active_limit
            moving = 0
            for task in tasks:
                if now >= task.deadline:
                    self.expire(task, now)
                    continue
                if not self._update_gates(task, now):
                    continue
                if not self._workable(task, now):
                    continue
                if limit and moving >= limit:
                    task.queued = True
                    continue
                moving += 1
                task.queued = False
                task.started = True
                self._advance(task, now, dt)

    def _update_gates(self, task: Task, now: float) -> bool:
        """Apply credential expiry and pauses; True when the task may work."""
        expired = self.emu._expired_credentials
        stuck = ((task.owner_id, task.source_endpoint_id) in expired
                 or (task.owner_id, task.destination_endpoint_id) in expired)
        if stuck and task.status == ACTIVE:
            task.status = INACTIVE
            task.inactive_reason = "NO_CREDENTIALS"
            task.add_event(now, "NO_CREDENTIALS", "credentials expired",
                           "The credential for a collection of this task expired; "
                           "the task continues after the owner re-authenticates.",
                           is_error=True)
        elif not stuck and task.status == INACTIVE:
            task.status = ACTIVE
            task.inactive_reason = None
            task.add_event(now, "ACTIVE", "task reactivated", "credentials renewed")
        if task.status == INACTIVE:
            return False
        src = self.emu._collections[task.source_endpoint_id]
        dst = self.emu._collections[task.destination_endpoint_id]
        paused = src.paused or dst.paused
        if paused != task.is_paused:
            task.is_paused = paused
            task.add_event(now, "PAUSED" if paused else "UNPAUSED",
                           "paused by an activity manager" if paused else "resumed")
        return not paused

    @staticmethod
    def _workable(task: Task, now: float) -> bool:
        for item in task.items:
            if item.state == "pending" and item.retry_at <= now:
                return True
            if item.state == "expanded" and item.retry_at <= now:
                return True
        return False

    # -- terminal transitions ---------------------------------------------
    def _remaining_subtasks(self, task: Task) -> int:
        return task.subtasks_pending() + len(task.retrying_items())

    def finish(self, task: Task, now: float, status: str, code: str, description: str,
               *, counter: str) -> None:
        remaining = self._remaining_subtasks(task)
        setattr(task, counter, getattr(task, counter) + remaining)
        task.status = status
        task.completion_time = now
        task.fatal_error = {"code": code, "description": description}
        task.queued = False
        for item in task.items:
            item.fault_code = None
        task.add_event(now, code, description, is_error=True)

    def expire(self, task: Task, now: float) -> None:
        self.finish(task, now, FAILED, "EXPIRED", "deadline expired",
                    counter="subtasks_expired")

    def _succeed(self, task: Task, now: float) -> None:
        task.status = SUCCEEDED
        task.completion_time = now
        task.queued = False
        task.add_event(now, "SUCCEEDED", "succeeded")

    # -- progress ---------------------------------------------------------
    def _fault(self, task: Task, item: Item, now: float, code: str, message: str,
               *, side: str, path: str) -> None:
        coll_id = task.source_endpoint_id if side == "source" else task.destination_endpoint_id
        if task.skip_source_errors and side == "source" and code in SKIPPABLE \
                and item.state == "pending":
            item.state = "skipped"
            item.fault_code = None
            task.subtasks_skipped_errors += 1
            task.skipped_errors.append({
                "DATA_TYPE": "skipped_error",
                "source_path": item.source_path,
                "destination_path": item.destination_path,
                "error_code": code,
                "error_details": message,
                "error_time": iso(now),
                "is_directory": item.recursive,
                "is_symlink": False,
                "is_delete_destination_extra": False,
                "checksum_algorithm": None,
            })
            return
        task.faults += 1
        item.fault_code = code
        item.fault_time = now
        item.retry_at = now + self.emu._fault_retry_interval
        task.add_event(
            now, code, NICE_DESCRIPTIONS.get(code, code).lower(),
            f"Error ({side})\nEndpoint: {coll_id}\nPath: {path}\nMessage: {message}",
            is_error=True)

    def _advance(self, task: Task, now: float, dt: float) -> None:
        rate = self.emu._bytes_per_second
        if rate == float("inf"):
            allowance = float(MAX_BYTES_PER_TICK)
        else:
            allowance = rate * dt + task.carry
        budget = min(int(allowance), MAX_BYTES_PER_TICK)
        used = 0
        for item in task.items:
            if item.retry_at > now:
                continue
            if item.state == "pending":
                self._expand(task, item, now)
            if item.state == "expanded" and rate > 0:
                used += self._copy_item(task, item, now, budget - used)
        # slow rates accumulate fractions of a byte across ticks, but an idle
        # task must not bank budget for a burst later
        task.carry = allowance - budget if used >= budget and budget < MAX_BYTES_PER_TICK else 0.0
        if all(i.state in ("done", "skipped") for i in task.items):
            self._succeed(task, now)

    def _expand(self, task: Task, item: Item, now: float) -> None:
        emu = self.emu
        src_coll = emu._collections[task.source_endpoint_id]
        dst_coll = emu._collections[task.destination_endpoint_id]
        try:
            s_norm = normalize(item.source_path)
            if not emu._allowed(task.owner_id, src_coll.collection_id, s_norm, write=False):
                raise PathRefused(s_norm)
            s_local = local_path(src_coll, s_norm)
        except PathRefused:
            self._fault(task, item, now, "PERMISSION_DENIED",
                        f"Permission denied: {item.source_path}", side="source",
                        path=item.source_path)
            return
        try:
            d_norm = normalize(item.destination_path)
            if not emu._allowed(task.owner_id, dst_coll.collection_id, d_norm, write=True):
                raise PathRefused(d_norm)
            d_local = local_path(dst_coll, d_norm)
        except PathRefused:
            self._fault(task, item, now, "PERMISSION_DENIED",
                        f"Permission denied: {item.destination_path}",
                        side="destination", path=item.destination_path)
            return
        # As the owner's local account (fsaccess): the kernel decides what it may see.
        fs = emu._files(task.owner_id)
        try:
            kind = fs.probe(s_local)
        except OSError as exc:
            self._fault(task, item, now, _errno_code(exc),
                        f"{exc.strerror}: {item.source_path}", side="source",
                        path=item.source_path)
            return
        if kind is None:
            self._fault(task, item, now, "FILE_NOT_FOUND",
                        f"No such file or directory: {item.source_path}",
                        side="source", path=item.source_path)
            return
        if item.recursive and kind != "dir":
            self._fault(task, item, now, "NOT_A_DIRECTORY",
                        f"Not a directory (recursive item): {item.source_path}",
                        side="source", path=item.source_path)
            return
        if not item.recursive and kind == "dir":
            self._fault(task, item, now, "IS_A_DIRECTORY",
                        f"Is a directory (item not recursive): {item.source_path}",
                        side="source", path=item.source_path)
            return
        files: List[FileJob] = []
        dirs = 0
        try:
            if item.recursive:
                fs.mkdir(d_local, parents=True, exist_ok=True)
                dirs = 1
                base_src = item.source_path.rstrip("/")
                base_dst = item.destination_path.rstrip("/")
                unreadable: List[OSError] = []
                for dirpath, dirnames, filenames in fs.walk(s_local, onerror=unreadable.append):
                    rel_dir = Path(dirpath).relative_to(s_local)
                    # recursive_symlinks "ignore": symlinked entries are not followed;
                    # an excluded directory takes all it holds with it
                    dirnames[:] = sorted(d for d in dirnames
                                         if not fs.is_symlink(os.path.join(dirpath, d))
                                         and task.included(d, is_dir=True))
                    for d in dirnames:
                        dirs += 1
                        target = d_local / rel_dir / d
                        if not _inside(dst_coll, target.parent):
                            raise PathRefused(str(target))
                        fs.mkdir(target, exist_ok=True)
                    for name in sorted(filenames):
                        full = Path(dirpath) / name
                        if fs.is_symlink(full) or not fs.is_file(full) \
                                or not task.included(name, is_dir=False):
                            continue
                        rel = (rel_dir / name).as_posix()
                        files.append(FileJob(full, d_local / rel_dir / name,
                                             f"{base_src}/{rel}", f"{base_dst}/{rel}",
                                             fs.size(full)))
                if unreadable:
                    # A directory the account may not list is an error of the
                    # item (retried), never a silently smaller transfer.
                    exc = unreadable[0]
                    rel = os.path.relpath(exc.filename or s_local, s_local)
                    shown = base_src if rel == "." else f"{base_src}/{rel}"
                    self._fault(task, item, now, _errno_code(exc), f"{exc.strerror}: {shown}",
                                side="source", path=shown)
                    return
            else:
                files.append(FileJob(s_local, d_local, item.source_path,
                                     item.destination_path, fs.size(s_local)))
        except PathRefused:
            self._fault(task, item, now, "PERMISSION_DENIED",
                        f"Permission denied: {item.destination_path}",
                        side="destination", path=item.destination_path)
            return
        except OSError as exc:
            self._fault(task, item, now, _errno_code(exc), f"{exc.strerror}: {exc.filename}",
                        side="destination", path=item.destination_path)
            return
        item.files = files
        item.state = "expanded"
        item.fault_code = None
        task.files += len(files)
        task.directories += dirs
        task.subtasks_total += len(files)
        task.subtasks_succeeded += 1      # the expansion subtask itself

    def _copy_item(self, task: Task, item: Item, now: float, budget: int) -> int:
        dst_coll = self.emu._collections[task.destination_endpoint_id]
        fs = self.emu._files(task.owner_id)
        used = 0
        for job in item.files:
            if job.done:
                continue
            if budget - used <= 0 and job.started:
                break
            try:
                if not job.started:
                    if not _inside(dst_coll, job.dst.parent) or (
                            fs.is_symlink(job.dst) and not _inside(dst_coll, job.dst)):
                        raise PermissionError(errno.EACCES, "Permission denied",
                                              job.dst_display)
                    if task.sync_level is not None and \
                            self._up_to_date(fs, job, task.sync_level):
                        job.started = job.done = True
                        task.files_skipped += 1
                        task.subtasks_succeeded += 1
                        continue
                    try:
                        fs.mkdir(job.dst.parent, parents=True, exist_ok=True)
                        fs.create(job.dst)
                    except OSError as exc:
                        self._fault(task, item, now, _errno_code(exc),
                                    f"{exc.strerror or 'I/O error'}: {job.dst_display}",
                                    side="destination", path=job.dst_display)
                        return used
                    job.started = True
                used += self._copy_chunk(fs, task, job, budget - used)
            except OSError as exc:
                self._fault(task, item, now, _errno_code(exc),
                            f"{exc.strerror or 'I/O error'}: {job.src_display}",
                            side="destination" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                            else "source", path=job.src_display)
                return used
            if job.done:
                task.files_transferred += 1
                task.subtasks_succeeded += 1
                task.successful.append((job.src_display, job.dst_display))
                if task.preserve_timestamp:
                    _size, mtime, atime = fs.stat(job.src)[:3]
                    fs.utime(job.dst, atime, mtime)
                if not task.explicit_deadline:
                    task.deadline = max(task.deadline, now + PROGRESS_DEADLINE)
        if item.fault_code is not None and used:
            item.fault_code = None
        if all(j.done for j in item.files):
            item.state = "done"
            item.fault_code = None
        return used

    @staticmethod
    def _copy_chunk(fs: Files, task: Task, job: FileJob, budget: int) -> int:
        copied, eof = fs.copy_chunk(job.src, job.dst, job.offset, budget)
        job.offset += copied
        job.done = eof
        task.bytes_transferred += copied
        if task.verify_checksum:
            task.bytes_checksummed += copied
        return copied

    @staticmethod
    def _up_to_date(fs: Files, job: FileJob, level: int) -> bool:
        if not fs.is_file(job.dst):
            return False
        if level == 0:
            return True
        (s_size, s_mtime), (d_size, d_mtime) = fs.stat(job.src)[:2], fs.stat(job.dst)[:2]
        if s_size != d_size:
            return False
        if level == 1:
            return True
        if level == 2:
            return int(d_mtime) >= int(s_mtime)
        return fs.digest(job.src) == fs.digest(job.dst)


"""The transfer engine: expands items, copies files at a byte rate, records faults.

Globus semantics kept here (``reference/globus-transfer.md``):
- a missing source or a permission problem does not fail a task; the item
  retries with ``faults`` growing, unless ``skip_source_errors`` covers it:
  then PERMISSION_DENIED, FILE_NOT_FOUND and AMBIGUOUS_PATH on the source are
  skipped wherever they occur -- an item itself, a file or a subdirectory
  inside a recursive item -- each recorded in ``skipped_errors`` with a
  SKIPPED_ERRORS event (docs.globus.org/api/transfer/task_behavior, 4.1;
  task_events, 2.1); an unreadable subdirectory is never dropped silently;
- files a ``sync_level`` finds up to date are counted in ``files_skipped``
  and are not in ``successful_transfers`` (globus-sdk
  ``TransferClient.task_successful_transfers`` docstring);
- at most N tasks per identity move at once, the rest show ``Queued``; tasks
  backing off from an error, paused or INACTIVE do not hold a slot;
- at the deadline the task goes FAILED with fatal_error EXPIRED.

Everything runs under the emulator's lock, one tick at a time.
"""
from __future__ import annotations

import errno
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
SKIPPABLE = frozenset({"FILE_NOT_FOUND", "PERMISSION_DENIED", "AMBIGUOUS_PATH"})
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
        errno.ENAMETOOLONG: "INVALID_PATH_NAME",
    }.get(exc.errno or 0, "ENDPOINT_ERROR")


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
    def _skippable(self, task: Task, code: str, side: str) -> bool:
        return task.skip_source_errors and side == "source" and code in SKIPPABLE

    def _record_skip(self, task: Task, now: float, code: str, message: str, *,
                     source_path: str, destination_path: str, is_directory: bool) -> None:
        """One ``skipped_error`` document, shaped as Globus answers it (globus-cli
        tests/files/api_fixtures/skipped_error_list.yaml), and the task's
        SKIPPED_ERRORS event."""
        task.subtasks_skipped_errors += 1
        task.skipped_errors.append({
            "DATA_TYPE": "skipped_error",
            "source_path": source_path,
            "destination_path": destination_path,
            "error_code": code,
            "error_details": message,
            "error_time": iso(now),
            "is_directory": is_directory,
            "is_symlink": False,
            "is_delete_destination_extra": False,
            "checksum_algorithm": None,
            "external_checksum": None,
        })
        task.add_event(now, "SKIPPED_ERRORS", "skipped errors",
                       f"Skipped {code} on the source: {source_path}")

    def _fault(self, task: Task, item: Item, now: float, code: str, message: str,
               *, side: str, path: str) -> None:
        coll_id = task.source_endpoint_id if side == "source" else task.destination_endpoint_id
        if self._skippable(task, code, side) and item.state == "pending":
            item.state = "skipped"
            item.fault_code = None
            self._record_skip(task, now, code, message, source_path=item.source_path,
                              destination_path=item.destination_path,
                              is_directory=item.recursive)
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
        if emu._is_ambiguous(src_coll.collection_id, s_norm):
            self._fault(task, item, now, "AMBIGUOUS_PATH",
                        f"Ambiguous path: {item.source_path}", side="source",
                        path=item.source_path)
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
        # Source trouble found while listing a recursive item: (code, message,
        # source path, destination path, is_directory).  Skipped under
        # skip_source_errors; otherwise the whole item retries -- never dropped.
        trouble: List[tuple] = []
        try:
            if item.recursive:
                fs.mkdir(d_local, parents=True, exist_ok=True)
                dirs = 1
                base_src = item.source_path.rstrip("/")
                base_dst = item.destination_path.rstrip("/")

                def unreadable(exc: OSError) -> None:
                    # A directory the account may not list is trouble of the item
                    # (skipped or retried below), never a silently smaller transfer.
                    rel = Path(exc.filename or s_local).relative_to(s_local).as_posix()
                    rel = "" if rel == "." else "/" + rel
                    trouble.append((_errno_code(exc), f"{exc.strerror}: {base_src}{rel}",
                                    f"{base_src}{rel}", f"{base_dst}{rel}", True))

                for dirpath, dirnames, filenames in fs.walk(s_local, onerror=unreadable):
                    rel_dir = Path(dirpath).relative_to(s_local)
                    # recursive_symlinks "ignore": symlinked entries are not followed;
                    # an excluded directory takes all it holds with it
                    dirnames[:] = sorted(d for d in dirnames
                                         if not fs.is_symlink(os.path.join(dirpath, d))
                                         and task.included(d, is_dir=True))
                    for d in list(dirnames):
                        rel = (rel_dir / d).as_posix()
                        if emu._is_ambiguous(src_coll.collection_id,
                                             normalize(f"{base_src}/{rel}")):
                            dirnames.remove(d)
                            trouble.append(("AMBIGUOUS_PATH",
                                            f"Ambiguous path: {base_src}/{rel}",
                                            f"{base_src}/{rel}", f"{base_dst}/{rel}", True))
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
                        src_display, dst_display = f"{base_src}/{rel}", f"{base_dst}/{rel}"
                        if emu._is_ambiguous(src_coll.collection_id,
                                             normalize(src_display)):
                            trouble.append(("AMBIGUOUS_PATH", f"Ambiguous path: {src_display}",
                                            src_display, dst_display, False))
                            continue
                        try:
                            size = fs.size(full)
                        except OSError as exc:   # gone or unreadable since the listing
                            trouble.append((_errno_code(exc), f"{exc.strerror}: {src_display}",
                                            src_display, dst_display, False))
                            continue
                        files.append(FileJob(full, d_local / rel_dir / name,
                                             src_display, dst_display, size))
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
        if trouble:
            code, message, path = trouble[0][0], trouble[0][1], trouble[0][2]
            if not all(self._skippable(task, c, "source") for c, *_ in trouble):
                self._fault(task, item, now, code, message, side="source", path=path)
                return
            for code, message, src_display, dst_display, is_dir in trouble:
                self._record_skip(task, now, code, message, source_path=src_display,
                                  destination_path=dst_display, is_directory=is_dir)
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
            if not job.started:
                try:
                    fs.check_readable(job.src)
                except OSError as exc:
                    code = _errno_code(exc)
                    text = f"{exc.strerror or 'I/O error'}: {job.src_display}"
                    if self._skippable(task, code, "source"):
                        # One unreadable file: skipped, the rest of the task goes on.
                        job.started = job.done = job.skipped = True
                        self._record_skip(task, now, code, text, source_path=job.src_display,
                                          destination_path=job.dst_display,
                                          is_directory=False)
                        continue
                    self._fault(task, item, now, code, text, side="source",
                                path=job.src_display)
                    return used
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
                        task.sync_skipped.append((job.src_display, job.dst_display))
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
            if job.done and not job.skipped:
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


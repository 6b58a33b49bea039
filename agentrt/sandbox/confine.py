"""The child's side: confinement applied in the replica before user code.

:func:`enter_cgroups` first thing, :func:`confine` after the fds and rlimits,
in this order: join the cgroups, a fresh network namespace, the working
directory (chowned to ``run_as``), the environment allowlist, the import
paths kept readable for ``run_as`` (a private mount namespace where an
ancestor is closed to that uid), drop to ``run_as`` (setgroups, setgid,
setuid), ``PR_SET_NO_NEW_PRIVS``, Landlock (the filesystem rules, or a
domain of its own, with the scopes), ``PR_SET_DUMPABLE`` 0.  Everything
needing root happens before the uid is dropped, every mount before Landlock
(a Landlock domain may not change mounts).

The Landlock domain is what keeps a replica away from the processes outside
its own tree (siblings, the zygote, the supervisor): no ptrace, no
``/proc/<pid>/fd``, and with the scopes of ABI 6 no signal and no abstract
unix socket.  Each replica makes its own domain; its children inherit it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import os
import signal
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from agentrt import _linux
from agentrt.protocol import Boot
from agentrt.sandbox.cgroups import apply_writes
from agentrt.sandbox.probe import (
    _FS_ABI1,
    _FS_FILE_RIGHTS,
    _FS_IOCTL_DEV,
    _FS_MAKE_BLOCK,
    _FS_READ,
    _FS_REFER,
    _FS_TRUNCATE,
    _LANDLOCK_RULE_PATH_BENEATH,
    _MS_BIND,
    _MS_NODEV,
    _MS_NOEXEC,
    _MS_NOSUID,
    _MS_RDONLY,
    _MS_REC,
    _MS_REMOUNT,
    _PR_SET_DUMPABLE,
    _PR_SET_NO_NEW_PRIVS,
    _SCOPE_ABSTRACT_UNIX_SOCKET,
    _SCOPE_SIGNAL,
    _SYS_LANDLOCK_ADD_RULE,
    _SYS_LANDLOCK_CREATE_RULESET,
    _SYS_LANDLOCK_RESTRICT_SELF,
    SCOPE_ABI,
    SandboxError,
    _libc,
    _mount,
    _private_mounts,
    _syscall,
    _unshare_net,
    has_cap_sys_admin,
    interpreter_paths,
    landlock_abi,
    outermost,
    real_paths,
)

__all__ = ["confine", "enter_cgroups", "warm"]


def enter_cgroups(boot: Boot) -> tuple[list[str], int | None]:
    """First thing in the child: make and join the replica's cgroups.

    A zygote's spare already waits in groups of its own under the same
    parents (:func:`join_spare_cgroups`): it renames each to the replica's
    name, instead of moving itself, which can take milliseconds (a move
    waits for an RCU grace period when no other move happened just before).
    Either way the limits are written before anything else runs.

    Returns what could not be done, where ``boot.cgroup_required`` allows
    the replica to go on without it (to be reported once it can speak), and
    the memory limit a failed group was to hold (to hold as RLIMIT_AS).
    """
    pid = os.getpid()
    writes = boot.cgroup_writes if len(boot.cgroup_writes) == len(boot.cgroups) else []
    unenforced: list[str] = []
    memory: int | None = None
    for i, d in enumerate(boot.cgroups):
        mine = _waiting.pop(os.path.dirname(d), None)
        try:
            if mine is not None:
                try:
                    os.rename(mine, d)
                except OSError:
                    pass  # moved in below, as any replica
                else:
                    try:
                        if writes:
                            apply_writes(d, writes[i])
                    except OSError:
                        # (a memory limit below what the spare already uses)
                        os.rename(d, mine)  # back: a fresh group, limited first
                    else:
                        mine = None
                        continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(d)  # (not its parent: the supervisor's, which went if it is gone)
            if writes:
                apply_writes(d, writes[i])
            _move_into(d, pid)
        except OSError as exc:
            if boot.cgroup_required:
                raise SandboxError(exc.errno, f"cannot join cgroup {d}: {exc.strerror}") from None
            unenforced.append(f"cannot make or join the replica's cgroup {d}: {exc.strerror}")
            for name, value, _required in writes[i] if writes else []:
                if name in ("memory.limit_in_bytes", "memory.max") and value.isdigit():
                    memory = int(value)
        finally:
            if mine is not None:  # left for another group: empty now, or soon
                with contextlib.suppress(OSError):
                    os.rmdir(mine)
    return unenforced, memory


def _move_into(d: str, pid: int) -> None:
    """Move process ``pid`` into cgroup ``d``; raises OSError."""
    fd = os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


#: the groups this process waits in, a zygote's spare: parent directory -> group
_waiting: dict[str, str] = {}
#: the directory a zygote's spare made to be its replica's workdir ("": none)
_waiting_workdir = ""


def spare_cgroups(parents: list[str], pid: int) -> list[str]:
    """The groups spare ``pid`` makes to wait in, one under each of ``parents``."""
    return [os.path.join(p, f"spare-{pid}") for p in parents]


def join_spare_cgroups(parents: list[str], pid: int) -> list[str]:
    """In a zygote's spare ``pid``, while it waits: make groups of its own under
    ``parents`` and move in, for :func:`enter_cgroups` to rename later; the
    groups it joined.

    Best effort: where a group cannot be made or joined, the spare waits
    where it is and, as a replica, joins its groups the slow way.
    """
    joined: list[str] = []
    for d in spare_cgroups(parents, pid):
        try:
            os.mkdir(d)
        except OSError:
            continue
        try:
            _move_into(d, pid)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(d)
            continue
        joined.append(d)
    return joined


def make_spare_workdir(rundir: str, pid: int) -> None:
    """In a zygote's spare ``pid``, while it waits: make the directory its
    replica will work in, for :func:`confine` to rename to the replica's
    name (a rename allocates no inode; a mkdir can take a millisecond on a
    filesystem busy with other creations and removals).  Best effort."""
    global _waiting_workdir
    d = spare_workdir(rundir, pid)
    with contextlib.suppress(OSError):
        os.mkdir(d, 0o700)
        _waiting_workdir = d


def spare_workdir(rundir: str, pid: int) -> str:
    """Where spare ``pid`` waits with its workdir (see :func:`make_spare_workdir`)."""
    return os.path.join(rundir, f"spare-{pid}")


def _make_workdir(path: str) -> None:
    """Make the replica's working directory: the spare's renamed, or a new one."""
    global _waiting_workdir
    mine, _waiting_workdir = _waiting_workdir, ""
    if mine:
        try:
            os.rename(mine, path)
            return
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(mine)
    try:
        os.mkdir(path, 0o700)  # (os.makedirs is Python, and dirties pages)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(path, mode=0o700, exist_ok=True)


def waiting_in(groups: list[str]) -> None:
    """In a spare: the groups it waits in (see :func:`join_spare_cgroups`)."""
    _waiting.clear()
    _waiting.update((os.path.dirname(d), d) for d in groups)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS


def _import_paths(boot: Boot) -> list[str]:
    """The interpreter's import paths, the agent's, and agentrt's own (real, existing)."""
    agentrt_dir = str(Path(__file__).resolve().parent.parent)  # editable installs
    return real_paths([*interpreter_paths(), *boot.sys_path, agentrt_dir])


# --- run_as: the import paths stay readable ---------------------------------------------


@contextlib.contextmanager
def _as_user(uid: int, gid: int) -> Iterator[None]:
    """The block runs with ``uid``/``gid`` as effective ids and no supplementary
    groups (as after the drop); root's effective ids come back after it."""
    egid = os.getegid()
    os.setgroups([])
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)


def _closed_ancestor(path: str) -> str:
    """The first ancestor of ``path`` the effective uid cannot enter ('' if none)."""
    cur = "/"
    for part in path.strip("/").split("/")[:-1]:
        cur = os.path.join(cur, part)
        if not os.access(cur, os.X_OK, effective_ids=True):
            return cur
    return ""


def _readable(path: str) -> bool:
    """Whether the effective uid reads ``path`` (and enters it, for a directory)."""
    need = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
    return os.access(path, need, effective_ids=True)


def _mountpoint(top: str, path: str, is_dir: bool) -> None:
    """Make ``path`` (below ``top``, a fresh tmpfs) and its parents, enterable by all."""
    cur = top
    parts = os.path.relpath(path, top).split("/")
    for part in parts[:-1]:
        cur = os.path.join(cur, part)
        if not os.path.isdir(cur):
            os.mkdir(cur)
            os.chmod(cur, 0o755)
    if is_dir:
        os.mkdir(path)
        os.chmod(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _cover(closed: dict[str, list[str]]) -> None:
    """In a private mount namespace: an empty tmpfs over each closed ancestor, its
    paths bound back read-only (only they are reachable through it)."""
    _private_mounts()
    # opened in the new namespace (a bind takes its source from the caller's own)
    # and before the tmpfs hides them
    fds = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for ps in closed.values() for p in ps}
    try:
        for top, paths in closed.items():
            _mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755")
            for p in paths:
                fd = fds[p]
                _mountpoint(top, p, stat.S_ISDIR(os.fstat(fd).st_mode))
                _mount(f"/proc/self/fd/{fd}", p, None, _MS_BIND | _MS_REC)
                noexec = os.statvfs(p).f_flag & os.ST_NOEXEC
                ro = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
                _mount(None, p, None, ro | (_MS_NOEXEC if noexec else 0))
            _mount(None, top, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    finally:
        for fd in fds.values():
            os.close(fd)


def _keep_readable(paths: list[str], uid: int, gid: int) -> None:
    """Keep ``paths`` readable once the process runs as ``uid``/``gid`` (needs root).

    Where an ancestor is closed to that uid (``/root``, mode 0700, holding a
    pyenv interpreter), a private mount namespace covers the ancestor with
    an empty tmpfs and binds the paths back read-only: the uid reaches them
    and nothing else there.  A path it still cannot read is a
    :class:`SandboxError` naming it.
    """
    closed: dict[str, list[str]] = {}
    with _as_user(uid, gid):
        for p in paths:
            top = _closed_ancestor(p)
            if top:
                closed.setdefault(top, []).append(p)
    if closed:
        try:
            _cover({top: outermost(ps) for top, ps in closed.items()})
        except OSError as exc:
            top, ps = next(iter(closed.items()))
            raise SandboxError(
                exc.errno or errno.EACCES,
                f"run_as: {ps[0]} is not readable by uid {uid} ({top} is closed to it) "
                f"and no private mount namespace can open it: {exc.strerror or exc}",
            ) from None
    with _as_user(uid, gid):
        for p in paths:
            if not _readable(p):
                raise SandboxError(
                    errno.EACCES,
                    f"run_as: {p} is not readable by uid {uid}: the agent could not import from it",
                )


# --- Landlock ------------------------------------------------------------------------------


def _ruleset(fs: int, scoped: int) -> int:
    """A new Landlock ruleset handling ``fs`` rights with the ``scoped`` scopes."""
    # handled_access_fs, handled_access_net, scoped (ABI >= 6); without scopes
    # handled_access_fs only, valid on every ABI
    attr = struct.pack("=QQQ", fs, 0, scoped) if scoped else struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    rfd = int(
        _syscall(_SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    )
    if rfd < 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    return rfd


def _add_rule(rfd: int, path: str, access: int) -> None:
    """Allow ``access`` beneath ``path`` (a path that does not exist grants nothing)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            access &= _FS_FILE_RIGHTS
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
        rc = _syscall(
            _SYS_LANDLOCK_ADD_RULE,
            ctypes.c_int(rfd),
            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
            rule,
            ctypes.c_uint32(0),
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise SandboxError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _restrict(rfd: int) -> None:
    if _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(rfd), ctypes.c_uint32(0)) != 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"landlock_restrict_self: {os.strerror(err)}")


def _scopes(scope: bool, abi: int) -> int:
    if not scope:
        return 0
    if abi < SCOPE_ABI:
        raise SandboxError(errno.ENOSYS, f"Landlock scoping needs ABI >= {SCOPE_ABI} (here: {abi})")
    return _SCOPE_SIGNAL | _SCOPE_ABSTRACT_UNIX_SOCKET


def _landlock(read: list[str], write: list[str], scope: bool = False) -> None:
    """A domain allowing only ``read`` and ``write`` (with the scopes when ``scope``)."""
    abi = landlock_abi()
    if abi <= 0:
        raise SandboxError(errno.ENOSYS, "Landlock is not available")
    handled = _FS_ABI1
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    rfd = _ruleset(handled, _scopes(scope, abi))
    try:
        for p in read:
            _add_rule(rfd, p, _FS_READ & handled)
        for p in write:
            _add_rule(rfd, p, handled)
        _prctl_nnp()
        _restrict(rfd)
    finally:
        os.close(rfd)


def _domain(scope: bool) -> None:
    """A Landlock domain of its own that restricts as little as the ABI allows.

    What it is for: no process outside it may be ptraced, nor its
    ``/proc/<pid>/fd`` (exe, cwd, root, mem) opened.  ABI >= 6: the domain
    handles no filesystem right, only the abstract-unix-socket scope (and
    the signal scope too with ``scope``).  ABI 2-5: it handles making block
    devices and reparenting, with reparenting allowed beneath ``/`` again
    (a domain refuses cross-directory renames otherwise); a replica then
    cannot change mounts either.  Needs no_new_privs without CAP_SYS_ADMIN.
    """
    rfd = _kept.pop(scope, -1)
    if rfd < 0:
        abi = landlock_abi()
        if abi < 2:
            raise SandboxError(
                errno.ENOSYS,
                f"a Landlock domain without filesystem rules needs ABI >= 2 (here: {abi})",
            )
        rfd = _domain_ruleset(scope, abi)
    try:
        if os.geteuid() != 0 or not has_cap_sys_admin():
            _prctl_nnp()
        _restrict(rfd)
    finally:
        os.close(rfd)


def _domain_ruleset(scope: bool, abi: int) -> int:
    """The ruleset of :func:`_domain` (``abi`` >= 2)."""
    if abi >= SCOPE_ABI:
        return _ruleset(0, _SCOPE_ABSTRACT_UNIX_SOCKET | _scopes(scope, abi))
    rfd = _ruleset(_FS_MAKE_BLOCK | _FS_REFER, _scopes(scope, abi))
    try:
        _add_rule(rfd, "/", _FS_REFER)
    except BaseException:
        os.close(rfd)
        raise
    return rfd


def keep_domain_rulesets() -> None:
    """In the zygote: make the rulesets of :func:`_domain` once, for every
    replica it forks to apply (it inherits them; making one is Python and
    ctypes work that writes to some 40 pages the child would otherwise
    share).  A replica closes them all in :func:`confine`, before any user
    code runs: a ruleset can still be added to, and they are its siblings'."""
    abi = landlock_abi()
    if abi < 2:
        return
    for scope in (False, True) if abi >= SCOPE_ABI else (False,):
        if scope not in _kept:
            with contextlib.suppress(SandboxError):
                _kept[scope] = _domain_ruleset(scope, abi)


def kept_rulesets() -> list[int]:
    """The descriptors of the zygote's rulesets (see :func:`keep_domain_rulesets`)."""
    return list(_kept.values())


def _drop_kept() -> None:
    while _kept:
        os.close(_kept.popitem()[1])


#: the zygote's domain rulesets, by scope (see keep_domain_rulesets)
_kept: dict[bool, int] = {}


def warm() -> None:
    """In the zygote: run what every replica's confinement runs and that is
    harmless here (the ABI and capability probes, building the rulesets a
    domain uses, then dropping them unapplied), so that a replica finds that
    code specialised and its caches filled rather than copying pages to do it."""
    abi = landlock_abi()
    has_cap_sys_admin()
    if abi < 2:
        return
    for _ in range(12):  # past CPython's specialisation warm-up
        for scope in (False, True):
            try:
                if abi >= SCOPE_ABI:
                    rfd = _ruleset(0, _SCOPE_ABSTRACT_UNIX_SOCKET | _scopes(scope, abi))
                else:
                    rfd = _ruleset(_FS_MAKE_BLOCK | _FS_REFER, _scopes(scope, abi))
            except SandboxError:
                return
            os.close(rfd)


def _prctl(option: int, value: int, what: str) -> None:
    zero = ctypes.c_ulong(0)
    if _libc.prctl(option, ctypes.c_ulong(value), zero, zero, zero) != 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"{what}: {os.strerror(err)}")


def _prctl_nnp() -> None:
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")


def confine(boot: Boot) -> None:
    """The rest of the confinement, in the child, before user code.

    Creates and enters ``boot.workdir`` as well (chowned to ``run_as``).
    """
    try:
        _confine(boot)
    finally:
        _drop_kept()  # (none reaches the agent)


def _confine(boot: Boot) -> None:
    if boot.network == "none":
        try:
            _unshare_net()
        except OSError as exc:
            raise SandboxError(
                exc.errno or errno.EPERM, f"network = 'none': cannot unshare: {exc}"
            ) from None
        with contextlib.suppress(OSError):
            _loopback_up()
    _make_workdir(boot.workdir)
    if boot.run_uid is not None:
        os.chown(
            boot.workdir,
            boot.run_uid,
            boot.run_gid if boot.run_gid is not None else -1,
            follow_symlinks=False,
        )
    os.chdir(boot.workdir)
    # (what the interpreter needs to read: worked out only where it is confined)
    imports = _import_paths(boot) if boot.fs_read is not None or boot.run_uid is not None else []
    if boot.env_allow is not None:
        pats = boot.env_allow
        for k in list(os.environ):
            if not any(fnmatch.fnmatchcase(k, p) for p in pats):
                del os.environ[k]
    if boot.run_uid is not None:
        gid = boot.run_gid if boot.run_gid is not None else boot.run_uid
        if os.geteuid() == 0 and boot.run_uid != 0:
            _keep_readable(imports, boot.run_uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(boot.run_uid)
        # a credential change clears the parent-death signal: arm it again
        _linux.set_pdeathsig(signal.SIGKILL)
        if boot.supervisor_pid and os.getppid() == 1:
            os._exit(71)
    if boot.no_new_privs:
        _prctl_nnp()
    if boot.fs_read is not None:
        _landlock([*boot.fs_read, *imports], [*boot.fs_write, boot.workdir], boot.scope)
    elif boot.ptrace_isolation or boot.scope:
        _domain(boot.scope)
    if not boot.dumpable:  # after setuid, which resets it
        _prctl(_PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")

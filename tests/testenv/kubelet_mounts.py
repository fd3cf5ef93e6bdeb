"""A container's mounts for the test kubelet's processes: a mount namespace per container.

The process kubelet has no images, so a container's root is this machine's root; what makes it
a container for the code inside is that every volume is at its ``mountPath``. Before the
container's command runs, this module (run as a script, ``python -I -S kubelet_mounts.py PLAN
ARGV...``, then ``exec``) does, in a mount namespace of its own:

1. ``unshare(CLONE_NEWNS)`` (plus ``CLONE_NEWUSER`` mapping its own uid when not root) and
   makes every mount private, so nothing here reaches the host or another container;
2. opens every volume's host directory (``O_PATH``), before anything moves;
3. builds a new root: a tmpfs holding a recursive bind of each entry of ``/`` (symlinks
   copied), then ``chroot`` into it. The host's directories stay as they are, and a missing
   mount point such as ``/kubetune`` is created in that tmpfs, never on the host;
4. binds each volume onto its ``mountPath`` (``readOnly`` honoured), creating the mount point:
   inside the tmpfs, inside a volume (as runc does), or, under a host directory such as
   ``/run``, after *shadowing* that directory (a tmpfs with a bind of each of its entries
   moved over it), so the host directory is never written;
5. ``chdir`` to the working directory (created the same way when missing) and ``exec``.

Failures before ``exec`` are written to the status pipe (fd given in the plan) so the kubelet
reports ``StartError`` with the message, as it does for a command that cannot be started; a
successful ``exec`` closes the pipe (close-on-exec) with nothing written.

``plan`` and ``enter_argv`` are what the kubelet uses; only the standard library is imported,
so the script runs under ``-I -S``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

SCRIPT = os.path.abspath(__file__)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
# statvfs flags a read-only remount must keep (a user namespace may not clear them)
KEEP_FLAGS = 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000
SHADOW_STAGE = "/.kubetune-test-shadow"


@dataclass
class Mount:
    source: str  # on this machine
    target: str  # the mountPath
    read_only: bool = False


def plan(new_root: str, mounts: Sequence[Mount], cwd: str, status_fd: int) -> str:
    """The first argument of the script for one container."""
    return json.dumps(
        {
            "root": new_root,
            "mounts": [asdict(m) for m in mounts],
            "cwd": cwd,
            "status_fd": status_fd,
        }
    )


def enter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the container whose process is ``pid`` (mounts, root, cwd)."""
    user = [] if os.geteuid() == 0 else ["--user", "--preserve-credentials"]
    return ["nsenter", f"--target={pid}", "--mount", "--root", "--wd", *user, "--", *argv]


# -- the script ---------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    rc = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or fstype} on {target}: {os.strerror(err)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _unshare() -> None:
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS if uid == 0 else CLONE_NEWNS | CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    if uid == 0:
        return
    # mounts without root: a user namespace in which our uid maps to itself
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def _replicate(src_dir: str, dst_dir: str) -> None:
    """Each entry of src_dir appears in dst_dir (a fresh tmpfs): binds, symlinks copied."""
    st = os.stat(src_dir)
    os.chmod(dst_dir, st.st_mode & 0o7777)
    try:
        os.chown(dst_dir, st.st_uid, st.st_gid)
    except OSError:
        pass  # a user namespace maps only our own ids
    for entry in sorted(os.listdir(src_dir)):
        src = os.path.join(src_dir, entry)
        dst = os.path.join(dst_dir, entry)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            continue
        if os.path.isdir(src):
            os.mkdir(dst)
        else:
            with open(dst, "w"):
                pass
        # something we may not bind (a namespace file, a locked mount) stays an empty
        # placeholder: a real container would not see this machine's entry at all
        with contextlib.suppress(OSError):
            _mount(src, dst, None, MS_BIND | MS_REC)


class _Root:
    """Creates mount points in the new root without writing to a host directory."""

    def __init__(self) -> None:
        self.ours: set[str] = {"/"}  # directories in a tmpfs of this namespace
        self.volumes: list[str] = []  # mountPaths bound so far

    def _writable(self, path: str) -> bool:
        if path in self.ours:
            return True
        return any(path == v or path.startswith(v.rstrip("/") + "/") for v in self.volumes)

    def _shadow(self, path: str) -> None:
        os.mkdir(SHADOW_STAGE)
        _mount("tmpfs", SHADOW_STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        _replicate(path, SHADOW_STAGE)
        _mount(SHADOW_STAGE, path, None, MS_MOVE)
        os.rmdir(SHADOW_STAGE)
        self.ours.add(path)

    def ensure(self, path: str, is_dir: bool) -> str:
        cur = "/"
        parts = [p for p in path.split("/") if p]
        for i, comp in enumerate(parts):
            nxt = os.path.join(cur, comp)
            if os.path.lexists(nxt):
                cur = os.path.realpath(nxt)
                continue
            if not self._writable(cur):
                self._shadow(cur)
            nxt = os.path.join(cur, comp)
            if i == len(parts) - 1 and not is_dir:
                with open(nxt, "w"):
                    pass
            else:
                os.mkdir(nxt, 0o755)
                self.ours.add(nxt)
            cur = nxt
        return cur


def _setup(spec: dict) -> None:  # type: ignore[type-arg]
    root = spec["root"]
    mounts = sorted(spec["mounts"], key=lambda m: len([p for p in m["target"].split("/") if p]))
    _unshare()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    sources = []  # opened in this namespace (a bind's source must be), before anything moves
    for m in mounts:
        fd = os.open(m["source"], os.O_PATH | os.O_CLOEXEC)
        sources.append((fd, os.path.isdir(m["source"]), m))
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    _replicate("/", root)
    nested = root.rstrip("/") + root  # the new root's own copy inside the bind of its parent
    if os.path.ismount(nested):
        _umount(nested)
    os.chroot(root)
    os.chdir("/")
    tree = _Root()
    for fd, is_dir, m in sources:
        target = tree.ensure(m["target"], is_dir)
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        if m["read_only"]:
            keep = os.statvfs(target).f_flag & KEEP_FLAGS
            _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)
        tree.volumes.append(target)
        os.close(fd)
    cwd = spec["cwd"] or "/"
    os.chdir(tree.ensure(cwd, True) if not os.path.isdir(cwd) else cwd)


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    status_fd = int(spec["status_fd"])
    os.set_inheritable(status_fd, False)  # closed by a successful exec
    command = argv[1:]
    try:
        _setup(spec)
    except Exception as e:
        os.write(status_fd, f"the test kubelet's mounts: {e}".encode())
        os._exit(128)
    try:
        os.execvp(command[0], command)
    except OSError as e:
        os.write(status_fd, f"{command[0]}: {e.strerror}".encode())
    os._exit(128)


if __name__ == "__main__":
    main(sys.argv[1:])

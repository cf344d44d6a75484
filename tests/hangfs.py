"""A FUSE filesystem whose statfs never returns, like a hung NFS server, in plain Python.

    python -m tests.hangfs MOUNTPOINT      # mounts, serves until killed

It speaks the kernel's FUSE protocol on /dev/fuse itself (no libfuse): it answers INIT and
GETATTR of its root directory, answers every other request with ENOSYS, and leaves STATFS
unanswered for ever. Killing the process aborts the connection: the waiting calls then fail
with ENOTCONN, and the mount point is left for ``umount``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
GETATTR, STATFS, INIT = 3, 17, 26
NO_REPLY = {2, 36, 42}  # FORGET, INTERRUPT, BATCH_FORGET


def reply(fd: int, unique: int, body: bytes = b"", error: int = 0) -> None:
    os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), error, unique) + body)


def root_attr() -> bytes:
    attr = struct.pack("<6Q10I", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
    return struct.pack("<QII", 1, 0, 0) + attr


def serve(fd: int) -> None:
    while True:
        request = os.read(fd, 1 << 20)
        _, opcode, unique, *_ = IN_HEADER.unpack_from(request)
        if opcode == INIT:
            _major, _minor, readahead = struct.unpack_from("<III", request, IN_HEADER.size)
            reply(
                fd,
                unique,
                struct.pack("<IIIIHHIIHHI7I", 7, 31, readahead, 0, 0, 0, 4096, 1, 0, 0, 0, *[0] * 7),
            )
        elif opcode == GETATTR:
            reply(fd, unique, root_attr())
        elif opcode == STATFS or opcode in NO_REPLY:
            continue  # statfs hangs for ever
        else:
            reply(fd, unique, error=-errno.ENOSYS)


def main(mountpoint: str) -> None:
    fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"hangfs", mountpoint.encode(), b"fuse", 0, options) != 0:
        raise OSError(ctypes.get_errno(), f"mount {mountpoint}: {os.strerror(ctypes.get_errno())}")
    print("mounted", flush=True)
    serve(fd)


if __name__ == "__main__":
    main(sys.argv[1])

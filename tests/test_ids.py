"""Event and offer ids are unique within a process, across processes and after fork."""

from __future__ import annotations

import os
import subprocess
import sys

from aislecast.kernel.ids import new_id


def test_ids_look_like_uuid_hex_and_never_repeat() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    hexdigits = set("0123456789abcdef")
    assert all(len(i) == 32 and set(i) <= hexdigits for i in ids)  # lowercase, like uuid4().hex
    # one per-process prefix, then a counter: ids sort in the order they were made
    assert len({i[:16] for i in ids}) == 1
    assert ids == sorted(ids)


def test_two_processes_and_a_forked_child_draw_different_ids() -> None:
    code = "from aislecast.kernel.ids import new_id; print(new_id())"
    a = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    b = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert a.stdout != b.stdout
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(w, new_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.waitpid(pid, 0)
    assert child[:16] != new_id()[:16]

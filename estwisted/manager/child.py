# -*- test-case-name: tests.test_manager -*-
"""
How a manager runs a database node::

    python -m estwisted.manager.child MANAGER_PID [twistd arguments...]

On Linux the process first asks the kernel (C{prctl(PR_SET_PDEATHSIG)}) to
send it SIGTERM when its parent dies, and exits at once if its parent is
already not C{MANAGER_PID}; then it runs C{twistd} with the remaining
arguments in this same process (the pid the manager knows is the node's).
A manager that is SIGKILLed therefore never leaves its nodes behind: they
shut down cleanly, and the manager starts them again when it comes back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def die_with_parent(manager_pid: int) -> bool:
    """
    Arrange for SIGTERM when the parent dies.

    @return: False if the parent is already gone (or is not the manager).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return os.getppid() == manager_pid


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[1].isdigit():
        raise SystemExit("usage: python -m estwisted.manager.child MANAGER_PID [twistd args]")
    if not die_with_parent(int(argv[1])):
        raise SystemExit("estore: the manager that started this node is gone")
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *argv[2:]]
    run()


if __name__ == "__main__":
    main(sys.argv)

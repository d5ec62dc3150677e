"""Start a program under rlimits: `python -I -S _limited.py MEMORY_BYTES CPU_SECONDS -- argv...`.

Run by `karma.actions._process` in place of the program when an action has memory or CPU
limits: it sets them on itself and becomes the program (exec keeps rlimits), so the limits
hold for the program and whatever it starts. `-` means no limit. A program that cannot be
started is reported on stderr with exit code 127, like a shell does. Only the standard
library is imported here: the worker's interpreter runs this file without site-packages.
"""

import os
import resource
import signal
import sys

CPU_GRACE_S = 1  # SIGXCPU at the soft limit; SIGKILL this much later if it is ignored


def main(args: list[str]) -> int:
    memory, cpu, separator, *argv = args
    if separator != "--" or not argv:
        sys.stderr.write("usage: _limited.py MEMORY_BYTES CPU_SECONDS -- argv...\n")
        return 2
    try:
        if memory != "-":
            resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
        if cpu != "-":
            resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + CPU_GRACE_S))
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"cannot set the limits (memory {memory}, cpu {cpu}): {exc}\n")
        return 126
    # Python ignores these at start; the program gets the defaults, as without limits.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"cannot run {argv[0]!r}: {exc.strerror or exc}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Exec a stack service from its private launch file: ``python -I -S launch.py RUN/launch/NAME.json``.

supervisord's ``environment=`` cannot carry arbitrary values (its parser has no escapes, so JSON
connections, URLs with ``%`` or a caller's multi-line variables break it), and a secret must never sit
on a command line. So each program's command names a 0600 JSON file {"argv": [...], "env": {...}} and
this script replaces itself with the program: same pid, so supervisord supervises the real process.
Standard library only, run without site-packages: it must start in milliseconds.
"""

import json
import os
import shlex
import sys
import time


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    argv, env = spec["argv"], spec["env"]
    # A header per start: the stack's failure report reads the log from the last one on.
    print(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(argv)}", flush=True)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # services never read their input
    os.close(devnull)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        print(f"launch failed: cannot execute {argv[0]}: {exc.strerror or exc}", flush=True)
        sys.exit(127)


if __name__ == "__main__":
    main()

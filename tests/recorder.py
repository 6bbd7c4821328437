"""
A process channel for the group tests (see groupharness.py): appends
C{NAME start TIME} to a record file when started, C{NAME stop TIME} when
told to stop (SIGTERM), and otherwise waits.

    python recorder.py RECORD NAME
"""

import os
import signal
import sys
import time


def write(path: str, name: str, what: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name} {what} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def main() -> None:
    path, name = sys.argv[1], sys.argv[2]

    def stop(number, frame):
        write(path, name, "stop")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    write(path, name, "start")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()

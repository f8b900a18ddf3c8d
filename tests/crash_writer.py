# -*- test-case-name: tests.test_crash -*-
"""
A writer process for the crash test: opens the storage at C{argv[1]} and
appends forever, as many concurrent logical appenders whose records share
one flush (group commit), until it is killed.

After every flush returned (and only then) it prints one line::

    ack STREAM:LAST STREAM:LAST ...

naming, for each stream written in that flush, the last event number now
durable, and flushes stdout.  It first prints C{ready END}.  Every 25
flushes it saves the stream index (delta tables).

Event data is a function of (stream, number, length), see L{payload}, so a
verifier can tell intact events from damaged ones.

Usage: C{python crash_writer.py DBDIR SEED CHUNK_SIZE [MAX_SECONDS]}.
"""

from __future__ import annotations

import random
import sys
import time

from estwisted.storage.open import open_storage

STREAMS = 40


def payload(stream: str, number: int, length: int) -> bytes:
    """
    The data of event C{number} of C{stream}, C{length} bytes long.
    """
    unit = f"{stream}:{number};".encode()
    return (unit * (length // len(unit) + 1))[:length]


def main(argv: list[str]) -> int:
    path, seed, chunk_size = argv[1], int(argv[2]), int(argv[3])
    max_seconds = float(argv[4]) if len(argv) > 4 else 20.0
    rng = random.Random(seed)
    log, index, closer = open_storage(path, False, chunk_size)
    out = sys.stdout
    out.write(f"ready {log.end_position}\n")
    out.flush()
    deadline = time.monotonic() + max_seconds
    flushes = 0
    while time.monotonic() < deadline:
        appenders = rng.randint(1, 32)
        added: list[tuple[str, int, int]] = []
        last: dict[str, int] = {}
        for _ in range(appenders):
            stream = f"s{rng.randrange(STREAMS)}"
            number = last.get(stream, index.last_event_number(stream)) + 1
            for _ in range(rng.randint(1, 8)):
                length = rng.choice((0, 10, 50, 200, 1500))
                position = log.append(
                    stream,
                    number,
                    number.to_bytes(8, "big") + seed.to_bytes(8, "big"),
                    "crash-test",
                    0,
                    payload(stream, number, length),
                    b"",
                    number,
                )
                added.append((stream, number, position))
                last[stream] = number
                number += 1
        log.flush()
        for stream, number, position in added:
            index.add(stream, number, position)
        out.write("ack " + " ".join(f"{s}:{n}" for s, n in last.items()) + "\n")
        out.flush()
        flushes += 1
        if flushes % 25 == 0:
            # index base and delta tables, so restarts load them and may
            # find one half written
            closer.save_index()
        time.sleep(rng.random() * 0.004)
    closer()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Helpers the demo workloads share: a failure type, a thread fan-out, and a text table."""

import threading


class Failure(Exception):
    """An expectation of the demo did not hold; the message says which."""


def parallel(n, fn):
    """Runs fn(i) for i in range(n) on n threads and re-raises the first exception."""
    errors = []

    def run(i):
        try:
            fn(i)
        except Exception as e:  # noqa: BLE001 -- reported to the caller below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def table(header, rows, indent="  ", text_columns=1):
    """Prints rows under header: the first text_columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        return "  ".join(str(c).ljust(w) if i < text_columns else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    print(indent + line(header))
    print(indent + "  ".join("-" * w for w in widths))
    for r in rows:
        print(indent + line(r))

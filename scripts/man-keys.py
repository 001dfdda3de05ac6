#!/usr/bin/env python3
"""man-keys.py PAGE CONFIG_MD: prints the roff page PAGE with its line '.\\" @KEYS@' replaced by
every key of the table in CONFIG_MD (docs/CONFIG.md, whose rows a unit test holds equal to the
key table in src/config.c), one .TP entry per key, grouped by section. `make install` runs it, so
the installed mongolb.ini(5) always lists the keys of the code it comes with."""
import re
import sys


def roff(text):
    """Markdown cell text as roff: code spans in bold, backslashes and leading dots escaped."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"`([^`]*)`", r"\\fB\1\\fR", text)
    return text


def main():
    page, config_md = sys.argv[1], sys.argv[2]
    rows = []
    for line in open(config_md, encoding="utf-8"):
        m = re.match(r"^\| `\[(\w+)\]` \| `(\w+)` \| (.*?) \| (yes|no) \| (.*) \|$", line.rstrip("\n"))
        if m:
            rows.append(m.groups())
    if not rows:
        sys.exit("man-keys.py: no key rows in %s" % config_md)
    out = []
    section = None
    for sec, key, default, reload, doc in rows:
        if sec != section:
            out.append(".SS [%s]" % sec)
            section = sec
        out.append(".TP")
        out.append("\\fB%s\\fR = \\fI%s\\fR" % (key, roff(default.strip("`")) if default != "(none)"
                                                  else "(none)"))
        out.append("%s%s" % (roff(doc), "" if reload == "yes" else " Needs a restart."))
    text = open(page, encoding="utf-8").read()
    marker = '.\\" @KEYS@\n'
    if marker not in text:
        sys.exit("man-keys.py: %s has no @KEYS@ line" % page)
    body = "\n".join(out) + "\n"
    # A line starting with a dot or a quote would be read as a request.
    body = re.sub(r"(?m)^(?!\.(SS|TP)\b)(['.])", r"\\&\2", body)
    sys.stdout.write(text.replace(marker, body))


main()

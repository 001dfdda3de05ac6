/*
 * sim_version.c: the MongoDB versions mongosim can claim (--version) and what each one changes in
 * what a client can observe.
 *
 * The maxWireVersion of each release is the server's (src/mongo/db/wire_version.h: WIRE_VERSION_50
 * is 13, WIRE_VERSION_51 14, ..., 7.0 is 21, 7.1 22, 8.0 25; the drivers' tables agree). Between
 * releases the wire version only grows, so a wire version alone (--max-wire-version) names the
 * newest release that has it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "sim.h"

static const struct {
    int version;
    int wire;
} releases[] = {
    {400, 7},  {402, 8},  {404, 9},  {500, 13}, {501, 14}, {502, 15}, {503, 16}, {600, 17},
    {601, 18}, {602, 19}, {603, 20}, {700, 21}, {701, 22}, {702, 23}, {703, 24}, {800, 25},
};

#define N_RELEASES (sizeof(releases) / sizeof(releases[0]))

int sim_version_wire(int version)
{
    for (size_t i = 0; i < N_RELEASES; i++)
        if (releases[i].version == version)
            return releases[i].wire;
    return -1;
}

int sim_version_of_wire(int wire)
{
    int v = releases[0].version;
    for (size_t i = 0; i < N_RELEASES; i++)
        if (releases[i].wire <= wire)
            v = releases[i].version;
    return v;
}

int sim_version_parse(const char *text, int *version)
{
    char *end;
    long major = strtol(text, &end, 10);
    if (end == text || *end != '.')
        return -EINVAL;
    const char *m = end + 1;
    long minor = strtol(m, &end, 10);
    if (end == m || *end || major < 0 || major > 99 || minor < 0 || minor > 99)
        return -EINVAL;
    int v = (int)(major * 100 + minor);
    if (sim_version_wire(v) < 0)
        return -EINVAL;
    *version = v;
    return 0;
}

void sim_version_string(int version, char *buf, size_t len)
{
    snprintf(buf, len, "%d.%d.0", version / 100, version % 100);
}

bool sim_legacy_opcodes_removed(int version)
{
    return version >= 501;
}

bool sim_exhaust_get_more(int version, bool mongos)
{
    return mongos ? version >= 701 : version >= 402;
}

bool sim_default_write_concern_majority(int version)
{
    return version >= 500;
}

# mongolb: build, test, demo and benchmark.
#
#   make          build/mongolb (the daemon) and build/mongosim (the cluster simulator)
#   make check    every test: unit suites (plain and under ASan+UBSan), format and docs checks,
#                 short fuzz runs, integration tests with PyMongo, the Node.js driver and mongosh
#                 against an ASan+UBSan build of the daemon
#   make demo     a simulated cluster, the proxy in front of it, and a workload through it
#   make bench    direct-versus-proxied benchmarks, then bench-auth
#   make bench-auth  the cost of authentication: auth on versus off, and of one login
#   make soak     a bounded chaos soak through real drivers (SOAK_SECONDS, default 180; not in check)
#   make coverage line coverage of each file of src/ from the unit and integration suites (gcov;
#                 not in check)
#   make install  the daemon, its systemd unit, an example configuration and the man pages
#                 (PREFIX=/usr/local, DESTDIR, BINDIR, SYSCONFDIR, UNITDIR, MANDIR; see below)
#
# The build prints one short line per file ("CC src/proxy.c"); V=1 shows the full commands.
# check, demo and bench first run scripts/install-deps.sh, so each works on a fresh Debian machine.

CC      ?= cc
PKGS    := libuv libbson-1.0 inih openssl libcares libzstd snappy zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null)

VERSION := 0.1.0
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -DMONGOLB_VERSION='"$(VERSION)"' \
             -Isrc -Itests/sim $(PKG_CFLAGS)

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

B ?= build

DAEMON_SRCS := $(wildcard src/*.c)
LIB_SRCS    := $(filter-out src/main.c,$(DAEMON_SRCS))
SIM_SRCS    := $(wildcard tests/sim/*.c)
SIMLIB_SRCS := $(filter-out tests/sim/mongosim.c,$(SIM_SRCS))
BENCH_SRCS  := $(wildcard tests/bench/*.c)
UNIT_SRCS   := $(wildcard tests/unit/check_*.c)

LIB_OBJS    := $(LIB_SRCS:%.c=$(B)/obj/%.o)
SIMLIB_OBJS := $(SIMLIB_SRCS:%.c=$(B)/obj/%.o)
UNIT_BINS   := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)

.PHONY: all check unit unit-asan format-check integration integration-asan demo bench bench-auth \
	deps clean format soak bench-idle install uninstall

# Quiet rules: "CC file" instead of the whole command line (none at all under make -s).
ifeq ($(V),1)
Q :=
say = @:
else
Q := @
say = $(if $(findstring s,$(firstword -$(MAKEFLAGS))),@:,@printf '  %-5s %s\n')
endif

all: $(B)/mongolb $(B)/mongosim $(if $(BENCH_SRCS),$(B)/mlbench)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(say) CC $<
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/libmongolb.a: $(LIB_OBJS)
	@rm -f $@
	$(say) AR $@
	$(Q)ar rcs $@ $^

$(B)/libmongosim.a: $(SIMLIB_OBJS)
	@rm -f $@
	$(say) AR $@
	$(Q)ar rcs $@ $^

SIMLIB := $(if $(SIMLIB_OBJS),$(B)/libmongosim.a)

$(B)/mongolb: $(B)/obj/src/main.o $(B)/libmongolb.a
	$(say) LD $@
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(B)/mongosim: $(B)/obj/tests/sim/mongosim.o $(SIMLIB) $(B)/libmongolb.a
	$(say) LD $@
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(B)/mlbench: $(BENCH_SRCS:%.c=$(B)/obj/%.o) $(B)/libmongolb.a
	$(say) LD $@
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm

# One Check binary per suite file; each check_*.c has its own main (tests/unit/check_main.h).
$(B)/tests/%: $(B)/obj/tests/unit/%.o $(SIMLIB) $(B)/libmongolb.a
	@mkdir -p $(dir $@)
	$(say) LD $@
	$(Q)$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -o $@ $^ $(CHECK_LIBS) $(PKG_LIBS) -lm

$(B)/obj/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(say) CC $<
	$(Q)$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -MMD -MP -c $< -o $@

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)

deps:
	@./scripts/install-deps.sh

unit: $(UNIT_BINS)
	@./scripts/run-unit.sh $(UNIT_BINS)

# The same suites, built with AddressSanitizer and UndefinedBehaviorSanitizer in their own tree.
unit-asan:
	@$(MAKE) --no-print-directory B=build/asan CC=clang CFLAGS="-O1 -g $(SAN_FLAGS)" \
		LDFLAGS="$(SAN_FLAGS)" unit

format-check:
	@./scripts/format-check.sh

integration: all
	@./scripts/run-integration.sh

# The same suites against an ASan+UBSan build of the daemon (mongosim stays optimised): the
# fixtures fail a test whose mongolb log holds a sanitizer report, so the I/O half runs under the
# sanitizers on every make check. ASan's quarantine is kept small so that the memory-bound tests
# measure mongolb rather than freed blocks ASan holds back.
integration-asan: all
	@$(MAKE) --no-print-directory B=build/asan CC=clang CFLAGS="-O1 -g $(SAN_FLAGS)" \
		LDFLAGS="$(SAN_FLAGS)" build/asan/mongolb
	@MONGOLB=build/asan/mongolb ASAN_OPTIONS=quarantine_size_mb=16:detect_leaks=1 \
		./scripts/run-integration.sh

# Every step runs even when one before it failed; each test runner records its counts in the
# file CHECK_SUMMARY names (scripts/summary.sh), and the closing lines are one per runner, then
# the total alone on the last line: "check: N passed, N failed, N skipped", with the skipped tests
# named above them. A step that fails without counting anything (the build, format-check) counts
# one failure, as does a runner that never reported. make check fails if anything failed.
CHECK_SUMMARY_FILE := $(abspath $(B))/check-summary.txt
CHECK_RUNNERS      := unit unit-asan fuzz-smoke pytest pytest-tls pytest-auth-tls node node-tls

check: deps
	@mkdir -p $(B) && rm -f $(CHECK_SUMMARY_FILE)
	@export CHECK_SUMMARY=$(CHECK_SUMMARY_FILE); rc=0; \
	step() { name=$$1; shift; $(MAKE) --no-print-directory "$$@" && return 0; rc=1; \
		[ "$$name" = - ] || ./scripts/summary.sh add "$$name" 0 1 0; }; \
	step build all; \
	step format-check format-check; \
	step - unit; \
	UNIT_RUNNER=unit-asan step - unit-asan; \
	step - fuzz-smoke; \
	step - integration-asan; \
	echo; ./scripts/summary.sh report $(CHECK_RUNNERS) || rc=1; \
	exit $$rc

demo: deps
	@[ -x $(B)/mongolb ] && [ -x $(B)/mongosim ] || \
		echo "demo: building mongolb and mongosim (about a minute the first time)..."
	@$(MAKE) --no-print-directory -s all
	@./scripts/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@./scripts/bench.sh
	@./scripts/bench-idle.sh
	@./scripts/bench-auth.sh

# Idle-client memory and many-client throughput alone (also the end of make bench).
bench-idle: deps
	@$(MAKE) --no-print-directory all
	@./scripts/bench-idle.sh

# Authentication's cost alone (also the last part of make bench): see scripts/bench-auth.sh.
bench-auth: deps
	@$(MAKE) --no-print-directory all
	@./scripts/bench-auth.sh

# A bounded chaos soak (SOAK_SECONDS, default 180), not part of check: see scripts/soak.sh.
soak: deps
	@$(MAKE) --no-print-directory all
	@./scripts/soak.sh

# Line coverage of src/ from the unit and integration suites together (gcov; not part of check):
# mongolb and the unit suites built with --coverage in build/cov, the integration suites run
# against that mongolb, then the coverage of each file and the total. See scripts/coverage.sh.
.PHONY: coverage
coverage: deps
	@$(MAKE) --no-print-directory all
	@MONGOSIM=$${MONGOSIM:-$(B)/mongosim} ./scripts/coverage.sh

# --- Fuzzing ---------------------------------------------------------------------------------
#
#   make fuzz          each libFuzzer target for FUZZ_SECONDS (default 60); what it learns is kept in
#                      build/fuzz/corpus/<target> and used again next time
#   make fuzz-smoke    each target over its seed corpus (tests/fuzz/corpus/<target>), then a short
#                      bounded run of FUZZ_SMOKE_SECONDS; part of make check
#   make fuzz-corpus   writes the seed corpora again (tests/fuzz/gen_corpus.c)
#
# The targets and the pure modules they exercise are built with clang, libFuzzer's instrumentation,
# ASan and UBSan, in their own tree (build/fuzz). A crash, leak or sanitizer report fails the run;
# the input is kept under build/fuzz/artifacts/ (scripts/fuzz.sh says how to replay it).
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 6
FUZZ_B             := build/fuzz
FUZZ_CFLAGS        := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
                      -fno-sanitize-recover=all
FUZZ_LDFLAGS       := -fsanitize=fuzzer,address,undefined
FUZZ_SRCS          := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS       := $(FUZZ_SRCS:tests/fuzz/%.c=%)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-bins fuzz-corpus

# One binary per target, linked with libFuzzer's main and only the modules it exercises, so that
# work in progress elsewhere does not stop it from building; built by fuzz-build in $(FUZZ_B).
$(B)/fuzz_wire: $(B)/obj/src/wire.o
$(B)/fuzz_request: $(B)/obj/src/request.o $(B)/obj/src/wire.o $(B)/obj/src/bson_check.o
$(B)/fuzz_bson_check: $(B)/obj/src/bson_check.o
$(B)/fuzz_config: $(B)/obj/src/config.o $(B)/obj/src/log.o $(B)/obj/src/compress.o \
                    $(B)/obj/src/wire.o
$(B)/fuzz_reply: $(B)/obj/src/reply.o $(B)/obj/src/wire.o
$(B)/fuzz_srv_txt: $(B)/obj/src/srv_parse.o
$(B)/fuzz_killcursors: $(B)/obj/src/killcursors.o $(B)/obj/src/request.o $(B)/obj/src/wire.o \
                       $(B)/obj/src/bson_check.o $(B)/obj/src/cursors.o
$(B)/fuzz_compress: $(B)/obj/src/compress.o $(B)/obj/src/wire.o
$(B)/fuzz_http: $(B)/obj/src/http.o $(B)/obj/src/basic_auth.o $(B)/obj/src/authfile.o \
                 $(B)/obj/src/scram.o
$(B)/fuzz_scram: $(B)/obj/src/scram.o
$(B)/fuzz_authfile: $(B)/obj/src/authfile.o $(B)/obj/src/scram.o
$(B)/fuzz_auth_parse: $(B)/obj/src/auth_parse.o $(B)/obj/src/scram.o $(B)/obj/src/wire.o
$(B)/fuzz_%: $(B)/obj/tests/fuzz/fuzz_%.o
	$(say) LD $@
	$(Q)$(CC) $(ALL_CFLAGS) $(FUZZ_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

fuzz-bins: $(FUZZ_TARGETS:%=$(B)/%)
	@:

fuzz-build:
	@$(MAKE) --no-print-directory B=$(FUZZ_B) CC=clang CFLAGS="$(FUZZ_CFLAGS)" fuzz-bins

fuzz: fuzz-build
	@./scripts/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_B) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	@./scripts/fuzz.sh smoke $(FUZZ_SMOKE_SECONDS) $(FUZZ_B) $(FUZZ_TARGETS)

$(B)/gen_fuzz_corpus: $(B)/obj/tests/fuzz/gen_corpus.o $(B)/obj/src/wire.o $(B)/obj/src/compress.o
	$(say) LD $@
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm

fuzz-corpus: $(B)/gen_fuzz_corpus
	$(B)/gen_fuzz_corpus tests/fuzz/corpus

format:
	clang-format -i $(wildcard src/*.[ch] tests/sim/*.[ch] tests/unit/*.[ch] tests/bench/*.[ch] \
		tests/fuzz/*.[ch])

# --- Installing ------------------------------------------------------------------------------
#
#   make install [PREFIX=/usr/local] [DESTDIR=/staging] [BINDIR=...] [SYSCONFDIR=/etc] ...
#
# puts build/mongolb in BINDIR, systemd/mongolb.service in UNITDIR with BINDIR and SYSCONFDIR
# written into it, conf/mongolb.ini as SYSCONFDIR/mongolb/mongolb.ini unless that file exists
# (then as mongolb.ini.example next to it: an operator's configuration is never overwritten),
# and the man pages mongolb(8) and mongolb.ini(5) in MANDIR. SYSCONFDIR is /etc whatever the
# PREFIX, since that is where the unit and the documentation look. DESTDIR is prepended to every
# path, for packaging. `make uninstall` removes what install put in place except the configuration.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
INSTALL    ?= install

install: $(B)/mongolb
	@$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/mongolb \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0755 $(B)/mongolb $(DESTDIR)$(BINDIR)/mongolb
	@sed -e 's|/usr/local/bin/mongolb|$(BINDIR)/mongolb|g' \
		-e 's|/etc/mongolb/|$(SYSCONFDIR)/mongolb/|g' systemd/mongolb.service > $(B)/mongolb.service
	$(INSTALL) -m 0644 $(B)/mongolb.service $(DESTDIR)$(UNITDIR)/mongolb.service
	@# The configuration holds no secret (passwords live in files it names), and the unit's
	@# transient user must read it: 0644.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/mongolb/mongolb.ini ]; then \
		echo "$(DESTDIR)$(SYSCONFDIR)/mongolb/mongolb.ini exists: kept; the example goes to mongolb.ini.example"; \
		$(INSTALL) -m 0644 conf/mongolb.ini $(DESTDIR)$(SYSCONFDIR)/mongolb/mongolb.ini.example; \
	else \
		echo "$(INSTALL) -m 0644 conf/mongolb.ini $(DESTDIR)$(SYSCONFDIR)/mongolb/mongolb.ini"; \
		$(INSTALL) -m 0644 conf/mongolb.ini $(DESTDIR)$(SYSCONFDIR)/mongolb/mongolb.ini; \
	fi
	@sed -e 's|/etc/mongolb/|$(SYSCONFDIR)/mongolb/|g' -e 's|/usr/local/bin/|$(BINDIR)/|g' \
		docs/mongolb.8 > $(B)/mongolb.8
	$(INSTALL) -m 0644 $(B)/mongolb.8 $(DESTDIR)$(MANDIR)/man8/mongolb.8
	@./scripts/man-keys.py docs/mongolb.ini.5 docs/CONFIG.md | \
		sed -e 's|/etc/mongolb/|$(SYSCONFDIR)/mongolb/|g' > $(B)/mongolb.ini.5
	$(INSTALL) -m 0644 $(B)/mongolb.ini.5 $(DESTDIR)$(MANDIR)/man5/mongolb.ini.5
	@echo "installed; then: systemctl daemon-reload && systemctl enable --now mongolb"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mongolb $(DESTDIR)$(UNITDIR)/mongolb.service \
		$(DESTDIR)$(MANDIR)/man8/mongolb.8 $(DESTDIR)$(MANDIR)/man5/mongolb.ini.5
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/mongolb/ (your configuration)"

clean:
	rm -rf build

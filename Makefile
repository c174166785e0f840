# SPDX-License-Identifier: MIT
#
# weft's Makefile only forwards: CMake (CMakePresets.json names the
# configurations release, asan and tsan) does the building, ctest the testing.
# Each configuration lives in build/<preset>.
#
#   make               release build: libweft.a and libweft.so, tests, examples, weft-bench
#   make test          release build, then every test (ctest, 2 at a time, with timeouts)
#   make race          the tests under ThreadSanitizer       (build/tsan)
#   make asan          the tests under ASan + UBSan          (build/asan)
#   make chaos         the release tests again with WEFT_DEBUG=chaos,seed=N, N in SEEDS
#   make aarch64       cross-build for AArch64 and run the tests under qemu-aarch64 (build/aarch64)
#   make demo          build and run the demo (DEMO_ARGS=--help for its options)
#   make bench         build weft-bench and say how to run it against Go
#   make install       install header, libraries and weft.pc under PREFIX (/usr/local)
#   make format        clang-format the C sources in place
#   make clean         remove build/
#
# Knobs: JOBS (build parallelism), CTEST_ARGS (extra ctest flags, e.g. -R sched
# or -L example), SEEDS, PREFIX, DEMO_ARGS, TSAN_NOASLR (1 runs make race with
# ASLR off; detected automatically).

CMAKE ?= cmake
CTEST ?= ctest
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SEEDS ?= 1 2 3
CTEST_ARGS ?=
DEMO_ARGS ?=
FORMAT_DIRS := src include tests bench examples tools

# The makes that cmake --build runs inherit this: no "Entering directory" noise.
MAKEFLAGS += --no-print-directory

# GCC 12's ThreadSanitizer aborts with "FATAL: ThreadSanitizer: unexpected
# memory mapping" when the kernel randomises mmap over more bits than it was
# built for (vm.mmap_rnd_bits > 28, the default on some newer kernels). With
# ASLR off for the test run that cannot happen; setarch -R is inherited by
# every test ctest starts.
TSAN_NOASLR ?= $(shell test "$$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)" -gt 28 2>/dev/null && echo 1)
ifeq ($(TSAN_NOASLR),1)
TSAN_RUN := setarch $(shell uname -m) -R
else
TSAN_RUN :=
endif

.PHONY: all release test race asan chaos aarch64 demo examples bench install format clean help

all: release

# Configure a preset's build directory once (and again when the presets change).
# CMake re-runs itself when a CMakeLists.txt changes, so nothing else is needed.
build/%/CMakeCache.txt: CMakePresets.json
	$(CMAKE) --preset $*
	@touch $@

release: build/release/CMakeCache.txt
	$(CMAKE) --build --preset release -j $(JOBS)

test: release
	$(CTEST) --preset release $(CTEST_ARGS)

race: build/tsan/CMakeCache.txt
	$(CMAKE) --build --preset tsan -j $(JOBS)
	$(TSAN_RUN) $(CTEST) --preset tsan $(CTEST_ARGS)

asan: build/asan/CMakeCache.txt
	$(CMAKE) --build --preset asan -j $(JOBS)
	$(CTEST) --preset asan $(CTEST_ARGS)

chaos: release
	@set -e; for seed in $(SEEDS); do \
		echo "== make chaos: WEFT_DEBUG=chaos,seed=$$seed"; \
		WEFT_DEBUG=chaos,seed=$$seed $(CTEST) --preset release $(CTEST_ARGS) || \
			{ echo "make chaos: FAILED with WEFT_DEBUG=chaos,seed=$$seed"; exit 1; }; \
	done

# The AArch64 port, cross-built and tested under QEMU's user-mode emulator.
# The cross compiler and QEMU come from Debian (installed here when missing
# and running as root with apt-get).
AARCH64_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
aarch64:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || \
	    ! command -v qemu-aarch64 >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make aarch64: installing $(AARCH64_PKGS)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends $(AARCH64_PKGS) >/dev/null || \
			{ apt-get update -qq >/dev/null && \
			  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends $(AARCH64_PKGS) >/dev/null; }; \
		else \
			echo "make aarch64: needs $(AARCH64_PKGS) (apt-get install them as root)"; \
			exit 1; \
		fi; \
	fi
	@test -f build/aarch64/CMakeCache.txt -a build/aarch64/CMakeCache.txt -nt CMakePresets.json || \
		$(CMAKE) --preset aarch64
	$(CMAKE) --build --preset aarch64 -j $(JOBS)
	$(CTEST) --preset aarch64 $(CTEST_ARGS)

demo: build/release/CMakeCache.txt
	$(CMAKE) --build --preset release -j $(JOBS) --target weft-demo
	./build/release/examples/weft-demo $(DEMO_ARGS)

examples: build/release/CMakeCache.txt
	$(CMAKE) --build --preset release -j $(JOBS) --target weft-examples

bench: build/release/CMakeCache.txt
	$(CMAKE) --build --preset release -j $(JOBS) --target weft-bench
	@echo
	@echo "weft-bench: build/release/bench/weft-bench"
	@echo "  one case:      build/release/bench/weft-bench --case Spawn --threads 2 --reps 3"
	@echo "  against Go:    ../shared/bin/vs-go Spawn Yield Sleep ForkJoin MutexContended MemPark"
	@echo "                 (run from this directory: vs-go takes the newest weft-bench below it,"
	@echo "                 or \$$WEFT_BENCH; it installs golang-go with apt-get if needed)"

# The prefix is a configure-time setting (weft.pc records it), so set it, then install.
install: build/release/CMakeCache.txt
	$(CMAKE) --preset release -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	$(CMAKE) --build --preset release -j $(JOBS)
	$(CMAKE) --install build/release

format:
	@command -v clang-format >/dev/null 2>&1 || \
		{ echo "make format: clang-format is not installed (apt-get install clang-format)"; exit 1; }
	find $(wildcard $(FORMAT_DIRS)) -name '*.[ch]' -print0 | xargs -0r clang-format -i

clean:
	rm -rf build

help:
	@sed -n '3,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

# Thin wrapper over CMake. The two commands that matter:
#   make demo   install what is missing, build, and backfill 50 symbols x 1 year
#   make test   install what is missing, check the house rules (formatting, banned functions),
#               build twice (plain and ASan+UBSan), run every test, then run each fuzz
#               target for a few seconds
#   make format rewrite every C file as .clang-format says
# And for the parsers of untrusted input:
#   make fuzz   build the libFuzzer targets with clang, run each FUZZ_SECONDS (default 60)
# And for installing:
#   make package  build the Debian package in build-pkg/ (lintian-checked); README, "Install"
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
PKG_BUILD  ?= build-pkg
JOBS       ?= 2
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5

.PHONY: all deps build asan fuzz-build fuzz style format test test-plain test-asan test-fuzz demo bench package clean

all: build

deps:
	@bash tools/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DBACKFILLD_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

test-plain: build
	cd $(BUILD) && ctest --output-on-failure

test-asan: asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

# libFuzzer needs clang; the fuzz build has its own directory and builds only the targets.
fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DBACKFILLD_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzz_targets

fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The smoke run in make test: the seeds plus a few seconds of fuzzing per target.
test-fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS)

# The house rules of STYLE.md a machine can check: .clang-format, and no banned function.
style: deps
	@bash tools/check-style.sh

format: deps
	@bash tools/check-style.sh --fix

test: style test-plain test-asan test-fuzz

demo: build
	@bash tools/demo.sh

# The .deb, from a build directory of its own with Debian's hardening flags; fails on any
# lintian tag that packaging/lintian-overrides does not explain. Prints the .deb's path.
package: deps
	@JOBS=$(JOBS) bash packaging/build-deb.sh $(PKG_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(PKG_BUILD)

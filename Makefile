# Thin wrapper over CMake. The two commands that matter:
#   make demo   install what is missing, build, and backfill 50 symbols x 1 year
#   make test   install what is missing, build twice (plain and ASan+UBSan), run every test
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= 2

.PHONY: all deps build asan test test-plain test-asan demo bench clean

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

test: test-plain test-asan

demo: build
	@bash tools/demo.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

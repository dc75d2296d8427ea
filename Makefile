# mmsb — the two commands a newcomer needs:
#   make run    set up (apt packages, .venv, build) and run the main job
#   make test   set up and run every test suite (CTest, sanitizers, pytest, benchmark smoke)
# Both are idempotent and quick when everything is already installed and built.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
JOBS ?= $(shell nproc)
CMAKE_GEN := -G Ninja
# The tree pip builds mmsb._core in (pyproject.toml build-dir): the tests reuse its engine.
TEST_BUILD := build/release
ASAN_BUILD := build/cpp-asan
TSAN_BUILD := build/cpp-tsan

.PHONY: setup run test test-cpp test-asan test-tsan test-fake-cuda test-python test-fuzz test-bench-smoke test-install test-wheel test-slow fuzz bench coverage clean

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/mmsb validate --json build/validate.json

test: setup test-cpp test-asan test-tsan test-fake-cuda test-python test-fuzz test-bench-smoke test-install test-wheel
	@echo "make test: all suites passed"

# Release build with every feature found here (CUDA compiled when nvcc exists: proves that path).
test-cpp:
	cmake -S . -B $(TEST_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DMMSB_BUILD_TESTS=ON \
	  -DMMSB_BUILD_BENCHMARKS=ON -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) >/dev/null
	cmake --build $(TEST_BUILD) -j $(JOBS)
	ctest --test-dir $(TEST_BUILD) --output-on-failure -j $(JOBS)

# AddressSanitizer + UndefinedBehaviorSanitizer over the C++ suites, with the CUDA code built
# against the tests' stand-in runtime (tests/fake_cuda): the CUDA backends and kernels run too,
# on two fake devices whose memory the host cannot touch.
test-asan:
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DMMSB_BUILD_TESTS=ON \
	  -DMMSB_FAKE_CUDA=ON -DMMSB_SANITIZE=address,undefined >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# ThreadSanitizer over the suites that run threads against each other: the ingest ring
# (IngestRing*: blocking, close, a 4-producer stress), the thread pool (ThreadPool*), parallel
# batch validation and apply (BatchApplyTest, ParallelValidate), and the Bus paths on top of them
# (BusRandomTest: batches at 1-3 threads; BusTickTest: producers submitting while ticks drain),
# the log's writer thread (HelperThread*; InjectedIoError's overlapped batches: large records
# written while the committer applies them), and replicator groups of emulated ranks, one thread
# each (EmulatedReplicator*); and the CUDA status checks (Cuda.*) of this build without CUDA,
# which proves the MMSB_WITH_CUDA=OFF build. Only the six executables holding them are built
# (~3-5 min from scratch on 2 cores, seconds when up to date). Built with MMSB_WITH_TBB=OFF:
# libtbb is not instrumented, so TSan cannot see its internal hand-offs and reports a race on
# every lane; no suppression can be narrow there,
# since TSan matches `race:` entries against whole stacks and thread-creation stacks, and every
# worker is created inside libtbb, so `race:libtbb` also hides real races in lane code (checked
# with a deliberate one). ThreadPool's std::thread backend runs the same lanes fully instrumented.
test-tsan:
	cmake -S . -B $(TSAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMMSB_BUILD_TESTS=ON \
	  -DMMSB_WITH_CUDA=OFF -DMMSB_WITH_TBB=OFF -DMMSB_SANITIZE=thread >/dev/null
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target test_parallel test_delta test_engine test_core test_log \
	  test_cuda test_page
	TSAN_OPTIONS=halt_on_error=1 ctest --test-dir $(TSAN_BUILD) --output-on-failure -j $(JOBS) \
	  -R 'IngestRing|ThreadPool|BatchApplyTest|ParallelValidate|BusRandomTest|BusTickTest|BusEventsTest|GroupCommit|HelperThread|Overlapped|EmulatedReplicator|PageTableConcurrent|^Cuda\.' \
	  -E '^simd_scalar\.'

# scripts/gpu-check.sh --fake: the GPU check's build, C++ and Python stages against the stand-in
# CUDA runtime (build/gpu-fake), so the script and the Python side of device pages stay working
# on machines without a GPU.
test-fake-cuda:
	bash scripts/gpu-check.sh --fake

# C++ package: cmake --install the engine into build/install-test/prefix, then build and run
# examples/cpp against that prefix only (find_package(mmsb)).
test-install:
	bash scripts/test-install.sh

# Python package: pip wheel, installed with its declared dependencies into a virtual environment
# of its own (build/wheel-test/venv), used from a folder outside the tree (see the script).
test-wheel:
	bash scripts/test-wheel.sh

# A short bounded libFuzzer run over each parser: the log's files and the replication wire
# (20 s each; longer: make fuzz).
test-fuzz:
	bash scripts/fuzz.sh 20

fuzz:
	bash scripts/fuzz.sh 300

# One worker process per core (pytest-xdist): every test makes its own buses and directories.
test-python:
	$(PY) -m pytest tests/python -q -m "not slow" -n $(JOBS)

# Every benchmark runs once, untimed, so the suites cannot rot; numbers come from `make bench`.
test-bench-smoke:
	$(PY) -m pytest benchmarks -q --benchmark-disable
	$(VENV)/bin/mmsb bench --quick --no-progress --json build/bench-quick.json

test-slow: setup
	$(PY) -m pytest tests/python -q -m slow

bench: setup
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,ops
	cmake -S . -B build/bench $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DMMSB_BUILD_BENCHMARKS=ON >/dev/null
	cmake --build build/bench -j $(JOBS) --target bench_apply bench_graph bench_semiring bench_propagation \
	  bench_ring bench_tick
	$(VENV)/bin/mmsb bench --compare benchmarks/results/baseline.json
	build/bench/benchmarks/cpp/bench_apply
	build/bench/benchmarks/cpp/bench_graph
	build/bench/benchmarks/cpp/bench_semiring
	build/bench/benchmarks/cpp/bench_propagation
	build/bench/benchmarks/cpp/bench_ring --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
	build/bench/benchmarks/cpp/bench_tick --benchmark_counters_tabular=true

# Line and function coverage of cpp/ by the C++ and Python suites (gcov, 8-12 min; not part of
# make test): build/coverage/summary.txt and functions.txt. See scripts/coverage.sh.
coverage: setup
	bash scripts/coverage.sh

clean:
	rm -rf build $(VENV)/.mmsb-built

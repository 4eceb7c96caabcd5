# consort build. `make` builds build/consort-worker and build/consort;
# `make test` runs every test: normal build, then ASan+UBSan, then valgrind.
#
# Layout (one directory per part, see ../shared/DESIGN.md):
#   common/       small shared helpers (logging, buffers, base64, HTTP glue)
#   vocab_align/  byte-level vocabulary alignment (tries, prefix masses)
#   sampler/      combination strategies and sampling
#   worker/       consort-worker (main in worker/main.c)
#   coordinator/  consort (main in coordinator/main.c)
#   tests/unit/test_*.c      one TAP program each, linked with every module
#   tests/integration/*.t    executable TAP scripts (shell, node, C drivers)
#
# Every extern symbol is unique project-wide (module prefixes), so a test can
# link all modules at once.
#
# llama.cpp is found by scripts/deps.sh (pkg-config `llama`, LLAMA_PREFIX,
# else pinned npm packages in .deps/); it also installs missing Debian
# packages. On macOS: brew install llama.cpp jansson libmicrohttpd curl
# pkg-config, then make (untested here: CI runs Debian).

BUILD ?= build
SAN ?= 0
CC ?= cc
OPT ?= -O2

-include build/config.mk

CFLAGS_BASE = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror \
  -g $(OPT) -MMD -MP -I. $(LLAMA_CFLAGS) $(DEP_CFLAGS) \
  -DCONSORT_BACKEND_DIR='"$(LLAMA_BACKEND_DIR)"'
LDFLAGS_BASE = $(LLAMA_LIBS) $(DEP_LIBS) -lm -lpthread \
  $(if $(LLAMA_RPATH),-Wl$(comma)-rpath$(comma)$(LLAMA_RPATH))
comma := ,
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS_BASE += -fsanitize=address,undefined
endif
CFLAGS_ALL = $(CFLAGS_BASE) $(CFLAGS)
LDFLAGS_ALL = $(LDFLAGS_BASE) $(LDFLAGS)

LIB_SRC = $(wildcard common/*.c vocab_align/*.c sampler/*.c)
WORKER_SRC = $(filter-out worker/main.c,$(wildcard worker/*.c))
COORD_SRC = $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
WORKER_OBJ = $(WORKER_SRC:%.c=$(BUILD)/obj/%.o)
COORD_OBJ = $(COORD_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC = $(wildcard tests/unit/test_*.c)
TEST_BIN = $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC = $(wildcard tests/tools/*.c bench/*.c tools/*.c)
TOOL_BIN = $(patsubst %.c,$(BUILD)/tools/%,$(notdir $(TOOL_SRC)))

BINS = $(if $(wildcard worker/main.c),$(BUILD)/consort-worker) $(if $(wildcard coordinator/main.c),$(BUILD)/consort)

.SECONDARY:
.PHONY: all run deps tests test test-normal test-san test-valgrind bench clean distclean
all: $(BINS)

build/config.mk: scripts/deps.sh
	bash scripts/deps.sh build/config.mk

deps: build/config.mk

$(BUILD)/obj/%.o: %.c build/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/consort-worker: $(BUILD)/obj/worker/main.o $(WORKER_OBJ) $(LIB_OBJ)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/consort: $(BUILD)/obj/coordinator/main.o $(COORD_OBJ) $(LIB_OBJ)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(WORKER_OBJ) $(COORD_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(WORKER_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/tools/%: $(BUILD)/obj/bench/%.o $(WORKER_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/tools/%: $(BUILD)/obj/tools/%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

tests: all $(TEST_BIN) $(TOOL_BIN)

# The README's main job: a local ensemble of the project's models, queried
# through the OpenAI-compatible API (examples/quickstart.sh).
run: all
	examples/quickstart.sh $(MODELS)

# The test command of the README. Each stage prints prove's summary.
test: test-normal test-san test-valgrind

# The normal stage also scores the whole held-out set with every committed
# model (test_models against models/README.md; about a minute on 2 cores).
test-normal: tests
	CONSORT_BUILD=$(BUILD) CONSORT_MODELS_FULL=1 tests/run.sh

test-san:
	$(MAKE) BUILD=build-san SAN=1 OPT=-O1 tests
	CONSORT_BUILD=build-san ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh

test-valgrind: tests
	CONSORT_BUILD=$(BUILD) CONSORT_VALGRIND=1 tests/run.sh unit

# Every benchmark, each printing side-by-side ratios (bench/RESULTS.md).
bench: tests
	bench/run.sh
	bench/ensemble_bench.sh
	bench/ppl_bench.sh

clean:
	rm -rf build build-san

distclean: clean
	rm -rf .deps

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

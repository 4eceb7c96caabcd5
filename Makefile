# consort build. `make` builds build/consort-worker and build/consort;
# `make test` runs every test: normal build, then ASan+UBSan, then valgrind,
# then each libFuzzer harness for a bounded time (`make fuzz`).
#
# Layout (docs/ARCHITECTURE.md):
#   common/       small shared helpers (logging, buffers, base64, HTTP glue)
#   protocol/     the member protocol: C structs <-> JSON (docs/PROTOCOL.md)
#   vocab_align/  byte-level vocabulary alignment (sorted vocabularies, candidate sets)
#   sampler/      the strategy registry, combination strategies and sampling
#   worker/       consort-worker (main in worker/main.c)
#   coordinator/  consort: engine/ (members, generation), api/ (OpenAI server),
#                 eval/ (ppl and ab arithmetic), cli/ (commands; main.c)
#   tests/unit/LAYER/test_*.c  one TAP program each, linked with its layer
#   tests/integration/*.t      executable TAP scripts (shell, node, C drivers)
#
# llama.cpp is found by scripts/deps.sh (pkg-config `llama`, LLAMA_PREFIX,
# else pinned npm packages in .deps/); it also installs missing Debian
# packages. On macOS: brew install llama.cpp jansson libmicrohttpd curl
# pkg-config, then make (untested here: CI runs Debian).

BUILD ?= build
SAN ?= 0
CC ?= cc
CXX ?= c++
OPT ?= -O2

-include build/config.mk

CFLAGS_BASE = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror \
  -g $(OPT) -MMD -MP -I. $(LLAMA_CFLAGS) $(DEP_CFLAGS) \
  -DCONSORT_BACKEND_DIR='"$(LLAMA_BACKEND_DIR)"'
LDFLAGS_BASE = $(LLAMA_LIBS) $(DEP_LIBS) -lstdc++ -lm -lpthread \
  $(if $(LLAMA_RPATH),-Wl$(comma)-rpath$(comma)$(LLAMA_RPATH))
comma := ,
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS_BASE += -fsanitize=address,undefined
endif
# FUZZ=1 (make fuzz sets it, with clang): the project's objects get the
# fuzzer's coverage hooks; only the harnesses link libFuzzer's main.
ifeq ($(FUZZ),1)
  CFLAGS_BASE += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS_BASE += -fsanitize=address,undefined
endif
CFLAGS_ALL = $(CFLAGS_BASE) $(CFLAGS)
# The C++ files (worker/wk_llama_safe.cpp and coordinator/engine/tokenizer.cpp,
# try/catch walls around llama.cpp and libsentencepiece) build with the C
# flags but their own language standard.
CXXFLAGS_ALL = $(filter-out -std=c11,$(CFLAGS_BASE)) -std=c++17 $(CXXFLAGS)
LDFLAGS_ALL = $(LDFLAGS_BASE) $(LDFLAGS)

# ---- layers -----------------------------------------------------------------
# Each layer is a folder whose objects link only with the layers below it
# (docs/ARCHITECTURE.md has the picture). A unit test lives in
# tests/unit/LAYER/ and links only LAYER and what LAYER may use, so a call
# into a layer above fails the link; scripts/check_layers.sh does the same for
# #include lines, and scripts/check_protocol_names.sh fails the build when a
# member-protocol field name is spelled outside protocol/ (both run with every
# build).
L_common      = common
L_protocol    = protocol common
L_vocab_align = vocab_align common
L_sampler     = sampler vocab_align common
L_worker      = worker protocol vocab_align common
L_engine      = coordinator/engine protocol sampler vocab_align common
L_eval        = coordinator/eval sampler vocab_align common
L_api         = coordinator/api coordinator/engine protocol sampler vocab_align common
L_cli         = coordinator/cli coordinator/api coordinator/eval coordinator/engine protocol sampler vocab_align common

MAINS = worker/main.c coordinator/cli/main.c
objs_of = $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out $(MAINS),$(foreach d,$(1),$(wildcard $(d)/*.c)))) \
  $(patsubst %.cpp,$(BUILD)/obj/%.o,$(foreach d,$(1),$(wildcard $(d)/*.cpp)))
# Test support code (the mock member) builds like a layer of its own.
SUPPORT_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/support/*.c))

LAYERS = common protocol vocab_align sampler worker engine eval api cli
TEST_BIN = $(foreach l,$(LAYERS),$(patsubst tests/unit/$(l)/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/$(l)/test_*.c)))
TOOL_SRC = $(wildcard tests/tools/*.c bench/*.c tools/*.c)
TOOL_BIN = $(patsubst %.c,$(BUILD)/tools/%,$(notdir $(TOOL_SRC)))

BINS = $(BUILD)/consort-worker $(BUILD)/consort

# libFuzzer harnesses, tests/fuzz/fuzz_NAME.c, each with the layer it links.
FUZZ_HARNESSES = openai:api proto:protocol tokenize:worker utf8_b64:common
FUZZ_BIN = $(foreach h,$(FUZZ_HARNESSES),$(BUILD)/fuzz/fuzz_$(word 1,$(subst :, ,$(h))))
FUZZ_SECONDS ?= 15

.SECONDARY:
.PHONY: all run deps tests test test-normal test-san test-valgrind test-fuzz fuzz fuzz-bins bench clean distclean check-layers install
all: check-layers $(BINS)

build/config.mk: scripts/deps.sh
	bash scripts/deps.sh build/config.mk

deps: build/config.mk

check-layers:
	@scripts/check_layers.sh
	@scripts/check_protocol_names.sh

$(BUILD)/obj/%.o: %.c build/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj/%.o: %.cpp build/config.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(BUILD)/consort-worker: $(BUILD)/obj/worker/main.o $(call objs_of,$(L_worker))
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/consort: $(BUILD)/obj/coordinator/cli/main.o $(call objs_of,$(L_cli))
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

# One rule per layer: tests/unit/LAYER/test_X.c -> $(BUILD)/tests/test_X.
define test_rule
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/$(1)/%.o $(call objs_of,$(L_$(1))) $(if $(filter $(1),engine api cli),$(SUPPORT_OBJ))
	@mkdir -p $$(dir $$@)
	$$(CC) $$^ -o $$@ $$(LDFLAGS_ALL)
endef
$(foreach l,$(LAYERS),$(eval $(call test_rule,$(l))))

# Reference tools and benchmarks: direct libllama loops (with the worker's
# code where they measure it); corpus tools use common/ only.
$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(call objs_of,$(L_worker))
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/tools/%: $(BUILD)/obj/bench/%.o $(call objs_of,$(L_worker))
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

$(BUILD)/tools/%: $(BUILD)/obj/tools/%.o $(call objs_of,$(L_common))
	@mkdir -p $(dir $@)
	$(CC) $^ -o $@ $(LDFLAGS_ALL)

tests: all $(TEST_BIN) $(TOOL_BIN)

# A harness links libFuzzer's main (clang++: libllama and the shim are C++).
define fuzz_rule
$(BUILD)/fuzz/fuzz_$(1): $(BUILD)/obj/tests/fuzz/fuzz_$(1).o $(call objs_of,$(L_$(2)))
	@mkdir -p $$(dir $$@)
	$$(CXX) -fsanitize=fuzzer $$^ -o $$@ $$(LDFLAGS_ALL)
endef
$(foreach h,$(FUZZ_HARNESSES),$(eval $(call fuzz_rule,$(word 1,$(subst :, ,$(h))),$(word 2,$(subst :, ,$(h))))))

fuzz-bins: check-layers $(FUZZ_BIN)

# Build every harness into build-fuzz/ with clang, then run each for
# FUZZ_SECONDS over its committed seeds (tests/fuzz/corpus/NAME/); any crash,
# leak or broken property fails (docs/FUZZING.md).
fuzz: build/config.mk
	$(MAKE) BUILD=build-fuzz FUZZ=1 CC=clang CXX=clang++ OPT=-O1 fuzz-bins
	CONSORT_BUILD=build-fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) prove -v --exec '' tests/fuzz/run.sh

# The README's main job: a local ensemble of the project's models, queried
# through the OpenAI-compatible API (examples/quickstart.sh).
run: all
	examples/quickstart.sh $(MODELS)

# The test command of the README. Each stage prints prove's summary.
test: test-normal test-san test-valgrind test-fuzz

# The normal stage also scores the whole held-out set with every committed
# model (test_models against models/README.md; about a minute on 2 cores).
test-normal: tests
	CONSORT_BUILD=$(BUILD) CONSORT_MODELS_FULL=1 tests/run.sh

test-san:
	$(MAKE) BUILD=build-san SAN=1 OPT=-O1 tests
	CONSORT_BUILD=build-san ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh

test-valgrind: tests
	CONSORT_BUILD=$(BUILD) CONSORT_VALGRIND=1 tests/run.sh unit

test-fuzz: fuzz

# Every benchmark, each printing side-by-side ratios (bench/RESULTS.md).
bench: tests
	bench/run.sh
	bench/ensemble_bench.sh
	bench/ppl_bench.sh

# `make install PREFIX=/opt/consort`: both programs into PREFIX/bin, stripped,
# built with a run path that does not point into the clone. With the npm
# llama.cpp libraries (the default on Linux) those are copied into
# PREFIX/lib/consort and the run path and CPU backend directory point there;
# with pkg-config or LLAMA_PREFIX the run path stays that installation's.
# Objects are built in $(BUILD)/install; the one that names the backend
# directory is rebuilt each time, so a new PREFIX takes effect.
PREFIX ?= /usr/local
INSTALL_LIB = $(PREFIX)/lib/consort
install: build/config.mk
	rm -f $(BUILD)/install/obj/worker/wk_model.o $(BUILD)/install/consort $(BUILD)/install/consort-worker
	$(MAKE) BUILD=$(BUILD)/install \
	  $(if $(LLAMA_BACKEND_DIR),LLAMA_RPATH=$(INSTALL_LIB) LLAMA_BACKEND_DIR=$(INSTALL_LIB)) \
	  $(BUILD)/install/consort $(BUILD)/install/consort-worker
	install -d $(DESTDIR)$(PREFIX)/bin
	install -s -m 755 $(BUILD)/install/consort $(BUILD)/install/consort-worker $(DESTDIR)$(PREFIX)/bin/
	$(if $(LLAMA_BACKEND_DIR),install -d $(DESTDIR)$(INSTALL_LIB) && cp -P $(LLAMA_BACKEND_DIR)/*.so $(DESTDIR)$(INSTALL_LIB)/)
	@echo "installed consort and consort-worker in $(DESTDIR)$(PREFIX)/bin"

clean:
	rm -rf build build-san build-fuzz

distclean: clean
	rm -rf .deps

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

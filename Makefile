# leakprobe: `make` builds the library and the harness, `make demo` shows it
# working, `make test` runs every test. See README.md.

LIB      := target/release/libleakprobe.so
HARNESS  := target/harness
CFLAGS   := -g -O0 -Wall -Wextra -fno-omit-frame-pointer
CXXFLAGS := $(CFLAGS)
PROGRAMS := exact estimate stress dlopen_loop jemalloc_linked demo

.PHONY: all lib harness deps test lint demo clean

all: lib harness

deps:
	@scripts/install-deps

lib:
	cargo build --release

harness: $(addprefix $(HARNESS)/,$(PROGRAMS)) $(HARNESS)/libplugin.so

$(HARNESS):
	mkdir -p $@

$(HARNESS)/exact: c-harness/exact.cc c-harness/common.h | $(HARNESS)
	$(CXX) $(CXXFLAGS) -o $@ $< -lpthread

$(HARNESS)/jemalloc_linked: c-harness/jemalloc_linked.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -ljemalloc

$(HARNESS)/estimate $(HARNESS)/stress: CFLAGS += -O2

$(HARNESS)/libplugin.so: c-harness/plugin.c | $(HARNESS)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $<

$(HARNESS)/%: c-harness/%.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -lpthread -ldl

lint:
	cargo fmt --check
	cargo clippy --release -- -D warnings

test: deps all lint
	cargo test --release -- --test-threads=2

demo: deps all
	scripts/demo

clean:
	cargo clean

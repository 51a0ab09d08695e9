# leakprobe: `make` builds the library and the harness, `make demo` shows it
# working, `make test` runs every test. See README.md.

LIB      := target/release/libleakprobe.so
HARNESS  := target/harness
CFLAGS   := -g -O0 -Wall -Wextra -fno-omit-frame-pointer
CXXFLAGS := $(CFLAGS)
# c-harness/malloc_shapes.c in each shape of call to malloc (see there).
FRAME0_SHAPES := shape_nopie_pointer shape_nopie_direct shape_nopie_pointer_onesegment shape_pie_pointer shape_pie_direct shape_noplt_direct
PROGRAMS := attach_churn attach_churn16 attach_static attach_cxx idle_wait exact estimate stress dlopen_loop jemalloc_linked demo series signals cxx_new fork at_exit privdrop unload threads growth growth_jemalloc capi spike unwind_shapes waits owned_signals inlined zmalloc dump_target usable usable_jemalloc own_malloc cxx_nodwarf out_of_memory fds mapped mapped_jemalloc shm brk cxx_checks jemalloc_extra stall bootstrap fork_lost single copyfail selfsig closefds execl_ign fixed_in_block

.PHONY: all lib harness java deps test lint demo bench clean

all: lib harness java

deps:
	@scripts/install-deps

lib:
	cargo build --release

harness: $(addprefix $(HARNESS)/,$(PROGRAMS) $(FRAME0_SHAPES)) $(HARNESS)/libplugin.so $(HARNESS)/libother_handler.so $(HARNESS)/stripped_pie $(HARNESS)/stripped_nopie $(HARNESS)/versioned_user $(HARNESS)/libjni_attach.so $(HARNESS)/stripped_wrapper $(HARNESS)/entry_points

$(HARNESS):
	mkdir -p $@

$(HARNESS)/%: c-harness/%.cc c-harness/common.h | $(HARNESS)
	$(CXX) $(CXXFLAGS) -o $@ $< -lpthread

$(HARNESS)/jemalloc_linked: c-harness/jemalloc_linked.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -ljemalloc

$(HARNESS)/jemalloc_extra: c-harness/jemalloc_extra.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -ljemalloc

# Its dlsym must be the one the library's calls reach.
$(HARNESS)/bootstrap: c-harness/bootstrap.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -rdynamic -o $@ $< -ldl

$(HARNESS)/entry_points: c-harness/entry_points.cc c-harness/common.h | $(HARNESS)
	$(CXX) $(CXXFLAGS) -o $@ $< -ljemalloc

# libisc's shape: a stripped library whose exported wrapper allocates
# through a static helper (unnamed once stripped) that calls mallocx.
$(HARNESS)/libwrapped.so: c-harness/wrapped_lib.c | $(HARNESS)
	$(CC) $(CFLAGS) -shared -fPIC -o $@.full $< -ljemalloc
	strip --strip-all -o $@ $@.full
	rm $@.full

$(HARNESS)/stripped_wrapper: c-harness/stripped_wrapper.c c-harness/common.h $(HARNESS)/libwrapped.so
	$(CC) $(CFLAGS) -o $@ $< -L$(HARNESS) -l:libwrapped.so -Wl,-rpath,'$$ORIGIN'

$(HARNESS)/growth_jemalloc: c-harness/growth.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -lpthread -ljemalloc

$(HARNESS)/mapped_jemalloc: c-harness/mapped.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -lpthread -ljemalloc

$(HARNESS)/usable_jemalloc: c-harness/usable.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -ljemalloc

$(HARNESS)/estimate $(HARNESS)/stress: CFLAGS += -O2
$(HARNESS)/unwind_shapes: CFLAGS += -O2 -fomit-frame-pointer
$(HARNESS)/cxx_nodwarf: CXXFLAGS += -g0

# malloc_shapes: pprof (Go 1.19) cannot read a non-PIE program whose code has
# its own segment (binutils' default), so one non-PIE shape keeps its code in
# the first segment.
$(HARNESS)/shape_nopie_pointer: SHAPE := -fno-pic -no-pie -DPOINTER
$(HARNESS)/shape_nopie_direct: SHAPE := -fno-pic -no-pie
$(HARNESS)/shape_nopie_pointer_onesegment: SHAPE := -fno-pic -no-pie -DPOINTER -Wl,-z,noseparate-code
$(HARNESS)/shape_pie_pointer: SHAPE := -fPIE -pie -DPOINTER
$(HARNESS)/shape_pie_direct: SHAPE := -fPIE -pie
$(HARNESS)/shape_noplt_direct: SHAPE := -fPIE -pie -fno-plt
$(addprefix $(HARNESS)/,$(FRAME0_SHAPES)): c-harness/malloc_shapes.c | $(HARNESS)
	$(CC) $(CFLAGS) $(SHAPE) -o $@ $<

$(HARNESS)/libplugin.so: c-harness/plugin.c | $(HARNESS)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $<

$(HARNESS)/libother_handler.so: c-harness/other_handler.c | $(HARNESS)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $<

# The JNI library of java-harness/NativeAttach.java, with the headers of
# javac's JDK (looked up when built: `make test` may have just installed it).
JDK = $(shell dirname "$$(dirname "$$(readlink -f "$$(command -v javac)")")")
$(HARNESS)/libjni_attach.so: c-harness/jni_attach.c | $(HARNESS)
	$(CC) $(CFLAGS) -shared -fPIC -I$(JDK)/include -I$(JDK)/include/linux -o $@ $< -lpthread

# The plugin as a versioned library, found through its soname's symlink.
$(HARNESS)/libversioned.so.1.0: c-harness/plugin.c | $(HARNESS)
	$(CC) $(CFLAGS) -shared -fPIC -Wl,-soname,libversioned.so.1 -o $@ $<

$(HARNESS)/versioned_user: c-harness/versioned_user.c c-harness/common.h $(HARNESS)/libversioned.so.1.0
	ln -sf libversioned.so.1.0 $(HARNESS)/libversioned.so.1
	$(CC) $(CFLAGS) -o $@ $< -L$(HARNESS) -l:libversioned.so.1 -Wl,-rpath,'$$ORIGIN'

# The demo as a PIE (and as a non-PIE program, whose frames pprof cannot name
# from the text format) built with -g, then stripped of everything, its debug
# info moved where gdb looks for it: debug/.build-id/xx/yyyy.debug.
$(HARNESS)/stripped_pie: PIE := -fPIE -pie
$(HARNESS)/stripped_nopie: PIE := -no-pie
$(HARNESS)/stripped_pie $(HARNESS)/stripped_nopie: c-harness/demo.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) $(PIE) -Wl,--build-id -o $@.full $<
	id=$$(readelf -n $@.full | awk '/Build ID/ {print $$3}'); \
	mkdir -p $(HARNESS)/debug/.build-id/$${id%$${id#??}} && \
	objcopy --only-keep-debug $@.full $(HARNESS)/debug/.build-id/$${id%$${id#??}}/$${id#??}.debug
	strip --strip-all -o $@ $@.full
	rm $@.full

$(HARNESS)/attach_churn16: c-harness/attach_churn.c | $(HARNESS)
	$(CC) $(CFLAGS) -DTHREADS=16 -o $@ $< -lpthread

# Statically linked: attach must refuse it (nothing can be loaded).
$(HARNESS)/attach_static: c-harness/attach_churn.c | $(HARNESS)
	$(CC) $(CFLAGS) -static -o $@ $< -lpthread

$(HARNESS)/%: c-harness/%.c c-harness/common.h | $(HARNESS)
	$(CC) $(CFLAGS) -o $@ $< -lpthread -ldl

java: target/java/GzipLeak.class

target/java/GzipLeak.class: $(wildcard java-harness/*.java)
	mkdir -p target/java
	javac -nowarn -d target/java $^ 2>&1 | grep -v "^Note:\|warning\|^ *\^\|sun.misc\|^[0-9]* warning" || true
	test -f $@

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	ruff check scripts tests/python
	ruff format --check scripts tests/python

# The library's unit tests also in the dev profile: overflow checks on
# (never in release, whose hot path they would change).
test: deps all lint target/bench/workloads target/bench/entry_pairs target/bench/attach_now.so
	cargo test --lib
	cargo test --release -- --test-threads=2
	python3 -m unittest discover -s tests/python

demo: deps all
	scripts/demo

bench: deps all target/bench/workloads target/bench/entry_pairs target/bench/cxx_workload target/bench/idle_thread.so target/bench/attach_now.so
	scripts/install-deps --bench
	scripts/bench

target/bench/workloads: bench/workloads.c
	mkdir -p target/bench
	$(CC) -O2 -g -o $@ $< -lpthread

target/bench/entry_pairs: bench/entry_pairs.cc
	mkdir -p target/bench
	$(CXX) -O2 -g -o $@ $< -ldl

target/bench/cxx_workload: bench/cxx_workload.cc
	mkdir -p target/bench
	$(CXX) -O2 -g -o $@ $< -lpthread

target/bench/idle_thread.so: bench/idle_thread.c
	mkdir -p target/bench
	$(CC) -O2 -shared -fPIC -o $@ $< -lpthread

target/bench/attach_now.so: bench/attach_now.c
	mkdir -p target/bench
	$(CC) -O2 -shared -fPIC -o $@ $< -ldl

clean:
	cargo clean

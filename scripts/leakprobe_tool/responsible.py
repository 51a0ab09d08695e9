"""The responsible frame of a stack: walking up from the allocation, the first
frame that is the program's own code. Passed on the way (each with the rule
that moved past it, which `report` shows): allocation wrappers (the built-in
list and `--alloc-frames`), the runtime's own layers (the JDK's classes and
their natives, zlib, V8 and node, CPython, the C and C++ libraries), and
unnamed frames inside a wrapper's object below that wrapper (a stripped
static helper). `--app-frames` stops the walk at a frame it matches.

A runtime's own allocations (its stack reaches the thread's or process's
start without any application frame) keep their innermost runtime frame;
a stack that ends in a runtime's entry stub (the unwinder could not pass
the JIT code that called it) is charged to the runtime function that code
called, the outermost one shown.

Stacks that are the same code share a `site`: the responsible frame and its
callers without the entry stubs they passed through (V8's and HotSpot's, which
differ by JIT tier) and without JIT code's unnamed addresses."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from .symbols import JAVA, Frame, base_name

# Runtime layers by function name (matched against the whole name without
# arguments), each with the name `report` gives the rule.
RUNTIME_NAMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "JDK",
        re.compile(
            r"(Java_(java|javax|jdk|sun|com_sun)_|JVM_|JNU_|jni_)\w+"  # the JDK's natives and JNI's entry points
        ),
    ),
    ("zlib", re.compile(r"(deflate|inflate)(Init2?_|Reset\w*|End|Copy|Params|SetDictionary|Prime)?|zcalloc|updatewindow")),
    # ... and node's own JavaScript as a perf map names it (`JS:*allocUnsafeSlow node:buffer:395:20`)
    ("V8/node", re.compile(r"Builtins?_\w+|v8::.*|node::.*|uv_\w+|napi_\w+|(LazyCompile|Function|JS):[*~^+]?\S* node:\S*")),
    (
        "CPython",
        re.compile(
            r"_?PyEval_\w+|_?PyObject_(Call|Vectorcall|FastCall|MakeTpCall)\w*|_?PyFunction_\w+|PyVectorcall_\w+"
            r"|cfunction_\w+|method_vectorcall\w*|slot_tp_\w+|vectorcall_\w+|_?PyCFunction_\w+|_Py_?RunMain|Py_BytesMain"
        ),
    ),
)
# Java frames of the JDK's own classes.
JDK_CLASS = re.compile(r"(java|javax|jdk|sun|com\.sun)\.[\w.$<>]+")
# Runtime layers by source file: the runtime's own scripts (node's built-in
# modules, CPython's standard library), for script frames named with their file.
# Searched (one wildcard-free pattern each: paths come from the dump).
RUNTIME_FILES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("V8/node", re.compile(r"^node:\S+$")),
    ("CPython", re.compile(r"/lib/python3[.\d]*/(?!(site|dist)-packages/)[^/]+(/[^/]+)*\.py$")),
)
# Runtime layers by object (its file name).
RUNTIME_OBJECTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("zlib", re.compile(r"libz\.so[.\d]*")),
    ("CPython", re.compile(r"python3[.\d]*d?|libpython3[.\d]*d?\.so[.\d]*")),
    ("V8/node", re.compile(r"node(js)?|libnode\.so[.\d]*")),
    ("C library", re.compile(r"libc\.so\.6|ld-linux[-\w]*\.so[.\d]*|libstdc\+\+\.so[.\d]*")),
)
# Where V8 and HotSpot enter or leave generated code: which one a call
# passed through depends on the JIT tier of its caller, not on the program.
# Matched against the name without arguments or return type (anonymous
# namespaces leave `::::`); no nested wildcards: names come from the dump's files.
ENTRY_STUB = re.compile(
    r"Builtins_\w+|v8::internal::(::)?(Builtin_\w+|FunctionCallbackArguments::\w+|HandleApiCall\w*(<\w*>)?"
    r"|Execution::\w+|Invoke\w*)|v8::Function::Call|call_stub|JavaCalls::\w+|StubRoutines\S*|Interpreter"
)
# Tier markers of JIT code names in perf maps: `LazyCompile:*f` (optimised) and `LazyCompile:~f`.
JIT_TIER = re.compile(r"^((?:LazyCompile|Function|JS|Script|Builtin):)[*~^+]")
# Where a thread or the process starts: above them is no application code.
ROOTS = re.compile(
    r"_start|__libc_start_\w+|start_thread|clone3?|__clone\w*|thread_start|_dl_start\w*"
    r"|thread_native_entry|JavaThread::thread_main_inner|Thread::call_run|JavaMain|ThreadJavaMain"  # HotSpot's threads
)
# A frame the symbolizer could not name: `object+0xoffset`, `[anonymous] 0x...`.
UNNAMED = re.compile(r"[^\s()]+\+0x[0-9a-f]+|\[[^\]]*\] 0x[0-9a-f]+.*")


# The last frame of a site whose stack ends in an entry stub.
UNSEEN = "[called from JIT code the stack does not show]"


@dataclass(frozen=True)
class Rules:
    wrappers: re.Pattern[str]  # the built-in allocation wrappers
    extra: re.Pattern[str] | None = None  # --alloc-frames
    app: re.Pattern[str] | None = None  # --app-frames


@dataclass(frozen=True)
class Walk:
    index: int  # of the responsible frame
    moved: tuple[str, ...]  # per frame before it: the rule that moved past it
    note: str | None = None  # how the responsible frame was chosen, when no rule stopped at it


def unnamed(f: Frame) -> bool:
    return f.file is None and f.obj != JAVA and UNNAMED.fullmatch(f.function) is not None


def anonymous(f: Frame) -> bool:
    """JIT code without a name (its address changes with the tier)."""
    return unnamed(f) and f.obj.startswith("[")


# The rules of allocation wrappers (what `report`'s flat column skips too).
WRAPPER_RULES = ("allocation wrapper", "--alloc-frames")
UNNAMED_RULE = "unnamed, inside"


def wrapper(f: Frame, rules: Rules) -> str | None:
    name = base_name(f.function)
    if rules.extra and rules.extra.fullmatch(name):
        return WRAPPER_RULES[1]
    return WRAPPER_RULES[0] if rules.wrappers.fullmatch(name) else None


def runtime(f: Frame) -> str | None:
    """Which runtime's own layer `f` is, if any."""
    if f.obj == JAVA:
        return "JDK" if f.function and JDK_CLASS.fullmatch(f.function) else None
    if unnamed(f):
        return None
    name = base_name(f.function)
    for layer, pattern in RUNTIME_NAMES:
        if pattern.fullmatch(name):
            return layer
    for layer, pattern in RUNTIME_FILES:
        if f.file and pattern.search(f.file):
            return layer
    obj = os.path.basename(f.obj)
    for layer, pattern in RUNTIME_OBJECTS:
        if pattern.fullmatch(obj):
            return layer
    return None


def stub(f: Frame) -> bool:
    return ENTRY_STUB.fullmatch(base_name(f.function).rpartition(" ")[2]) is not None


def app(f: Frame, rules: Rules) -> bool:
    return rules.app is not None and (rules.app.fullmatch(base_name(f.function)) or rules.app.fullmatch(f.function)) is not None


def root(f: Frame, below: Frame) -> bool:
    """No application code at or above `f`: a thread's or the process's start
    (a runtime's own `main` calling into it, as node's)."""
    name = base_name(f.function)
    return ROOTS.fullmatch(name) is not None or (name == "main" and f.obj == below.obj)


def walk(frames: tuple[Frame, ...], rules: Rules) -> Walk:
    """The responsible frame of `frames` (leaf first, the allocator's entry
    points already removed): never past the last frame."""
    n = len(frames)
    moved: list[str] = []
    i = 0
    while i < n - 1:
        f = frames[i]
        if app(f, rules):
            break
        why = wrapper(f, rules)
        if why:
            moved.append(why)
            i += 1
            continue
        if unnamed(f) and not anonymous(f):
            # A stripped helper between the allocator and its object's wrapper.
            j = i
            while j < n and unnamed(frames[j]) and frames[j].obj == f.obj:
                j += 1
            above = frames[j] if j < n else None
            if above is None or above.obj != f.obj or app(above, rules) or not (wrapper(above, rules) or runtime(above)):
                break
            label = base_name(above.function)
            moved += [f"{UNNAMED_RULE} {os.path.basename(f.obj)} below {label}"] * (j - i)
            i = j
            continue
        if not runtime(f):
            break
        # A run of the runtime's layers, with its entry stubs and JIT code.
        j = i
        while j < n and not app(frames[j], rules) and (runtime(frames[j]) or stub(frames[j]) or anonymous(frames[j])):
            j += 1
        if j < n and not root(frames[j], frames[j - 1]):
            moved += [f"runtime: {runtime(g) or 'entry stub'}" for g in frames[i:j]]
            i = j
            continue
        if j == n and stub(frames[-1]):
            # The stack ends where generated code called the runtime: charge the
            # runtime function that code called.
            k = max((k for k in range(i, j) if runtime(frames[k]) and not stub(frames[k])), default=i)
            moved += [f"runtime: {runtime(g) or 'entry stub'}" for g in frames[i:k]]
            return Walk(k, tuple(moved), f"called from code the stack does not show: it ends in {base_name(frames[-1].function)}")
        return Walk(i, tuple(moved), "the runtime's own: no application frame above it")
    return Walk(i, tuple(moved))


def site(frames: tuple[Frame, ...], label: Callable[[Frame], str]) -> tuple[str, ...]:
    """The key under which stacks that are the same code merge: `frames`
    (from the responsible one) without entry stubs and unnamed JIT code, JIT
    tier markers removed."""
    out = tuple(JIT_TIER.sub(r"\1", label(f)) for f in frames if not stub(f) and not anonymous(f))
    out = out or tuple(label(f) for f in frames[:1])
    # A stack that ends in an entry stub was called from code the unwinder
    # could not pass: said, so that a verdict does not look complete.
    return (*out, UNSEEN) if frames and stub(frames[-1]) else out

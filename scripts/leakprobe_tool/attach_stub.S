# The attach stub (scripts/leakprobe_tool/attach.py embeds its bytes; rebuild
# them with `as attach_stub.S -o x.o && objcopy -O binary -j .text x.o x.bin`).
# The GOT entries of malloc, calloc, realloc and free point at small entries
# ("lea r11, [original]; jmp common"). `common` runs at a call boundary on a
# program thread that holds none of the allocator's or the loader's locks:
# the first thread to claim `state` runs `load` (dlopen, then the library's
# function, with errno kept) on a private stack; every call then goes on to
# the original function. `hijack` is the other way in, for a process whose
# threads all wait in system calls: the injector stops one that waits in a
# call neither the allocator nor the loader makes, and points it there (on
# the private stack, every signal blocked); it claims the same `state`, so
# the library is loaded once whichever way wins, and then parks in pause()
# until the injector takes the thread back. Data page: 0x400 bytes after
# `common`'s start.
        .intel_syntax noprefix
        .text
common:
        cmp dword ptr [rip + state], 0
        jne tail
        push rax
        xor eax, eax
        mov r10d, 1
        lock cmpxchg dword ptr [rip + state], r10d
        pop rax
        jne tail
        mov r10, rsp
        mov rsp, qword ptr [rip + stack_top]
        push r10
        push r11
        push rdi
        push rsi
        push rdx
        push rcx
        push r8
        push r9
        push rax
        push rbx                # ten pushes: the call below is aligned
        call load
        pop rbx
        pop rax
        pop r9
        pop r8
        pop rcx
        pop rdx
        pop rsi
        pop rdi
        pop r11
        pop rsp
tail:
        jmp qword ptr [r11]

hijack:                         # rsp = stack_top, 16-byte aligned
        xor eax, eax
        mov r10d, 1
        lock cmpxchg dword ptr [rip + state], r10d
        jne park                # a GOT caller (or a cancel) came first
        mov dword ptr [rip + hijacked], 1
        call load
park:
        mov eax, 34             # pause: every signal is blocked, so only
        syscall                 # the injector's PTRACE_INTERRUPT ends it
        jmp park

load:                           # state 2 (result) or 4 (error) when done
        push rbx
        call qword ptr [rip + p_errno]
        mov rbx, rax
        mov eax, dword ptr [rbx]
        mov dword ptr [rip + saved_errno], eax
        mov rdi, qword ptr [rip + path]
        mov esi, 0x1002
        call qword ptr [rip + p_dlopen]
        mov qword ptr [rip + handle], rax
        test rax, rax
        jz failed
        mov rdi, rax
        mov rsi, qword ptr [rip + fname]
        call qword ptr [rip + p_dlsym]
        test rax, rax
        jz failed
        mov rdi, qword ptr [rip + arg0]
        mov rsi, qword ptr [rip + arg1]
        call rax
        mov qword ptr [rip + result], rax
        mov ecx, 2
        jmp back
failed:
        call qword ptr [rip + p_dlerror]
        mov qword ptr [rip + error], rax
        mov ecx, 4
back:
        mov eax, dword ptr [rip + saved_errno]
        mov dword ptr [rbx], eax
        mov dword ptr [rip + state], ecx
        pop rbx
        ret

        .org 0x400
state:       .long 0
saved_errno: .long 0
p_dlopen:    .quad 0
p_dlsym:     .quad 0
p_dlerror:   .quad 0
p_errno:     .quad 0
result:      .quad 0
error:       .quad 0
stack_top:   .quad 0
handle:      .quad 0
arg0:        .quad 0
arg1:        .quad 0
path:        .quad 0
fname:       .quad 0
hijacked:    .long 0

# `writer` (a separate routine, at 0xe00 of the stub; attach.py builds it with
# the displacement of its table, 16-byte (address, value) pairs ended by a
# zero address): run on the one stopped thread, it stores each value with one
# aligned 8-byte store, so a thread that runs meanwhile reads a GOT entry
# whole, then makes a getpid system call, where the injector takes the thread
# back. Encoded: 48 8d 35 <disp32> 48 8b 06 48 85 c0 74 0d 48 8b 56 08
# 48 89 10 48 83 c6 10 eb eb b8 27 00 00 00 0f 05
#
# writer: lea rsi, [rip + table]
# 1:      mov rax, qword ptr [rsi]
#         test rax, rax
#         jz 2f
#         mov rdx, qword ptr [rsi + 8]
#         mov qword ptr [rax], rdx
#         add rsi, 16
#         jmp 1b
# 2:      mov eax, 39
#         syscall

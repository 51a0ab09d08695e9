// `cxx_checks N`: N new+delete pairs in each of the twelve forms of
// operator delete (with every form of operator new), and nothing else that
// grows with N. tests/cxx.rs counts, under callgrind, the calls into the
// library's counting and checking functions: 12 N more of each than with
// N = 0, whatever the allocator. The first operator call (which makes the
// library probe the allocator's operators) is made whatever N is.
#include <cstdio>
#include <cstdlib>
#include <new>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    const std::align_val_t al{64};
    const size_t s = 100;
    void *volatile p = nullptr;
    ::operator delete(p);
    for (long i = 0; i < n; i++) {
        p = ::operator new(s);
        ::operator delete(p);
        p = ::operator new[](s);
        ::operator delete[](p);
        p = ::operator new(s);
        ::operator delete(p, s);
        p = ::operator new[](s);
        ::operator delete[](p, s);
        p = ::operator new(s, std::nothrow);
        ::operator delete(p, std::nothrow);
        p = ::operator new[](s, std::nothrow);
        ::operator delete[](p, std::nothrow);
        p = ::operator new(s, al);
        ::operator delete(p, al);
        p = ::operator new[](s, al);
        ::operator delete[](p, al);
        p = ::operator new(s, al, std::nothrow);
        ::operator delete(p, s, al);
        p = ::operator new[](s, al, std::nothrow);
        ::operator delete[](p, s, al);
        p = ::operator new(s, al);
        ::operator delete(p, al, std::nothrow);
        p = ::operator new[](s, al);
        ::operator delete[](p, al, std::nothrow);
    }
    printf("DONE %ld\n", n);
    return 0;
}

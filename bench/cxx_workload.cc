/* C++ benchmark workloads: `cxx_workload <name> [scale]`, deterministic,
 * printing a checksum like bench/workloads.c.
 *   cxx:   four threads, each replacing objects of a working set of 4k at
 *          random: char arrays (new[]/delete[]), strings and vectors (sized
 *          new/delete through std::allocator), list nodes (new/sized
 *          delete) and 64-byte-aligned objects (aligned new/delete)
 *   cxx_pairs: new+delete pairs of 64..127 bytes, rotating over four forms
 *          (array, sized, aligned sized, nothrow array), for instruction
 *          counts beside workloads.c's malloc+free pairs */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sizes 16..4096, small ones more often (log-uniform). */
static size_t mixed_size(uint64_t *s) {
    unsigned shift = 4 + next_rand(s) % 9;
    return ((size_t)1 << shift) + next_rand(s) % ((size_t)1 << shift);
}

struct Node {
    Node *next;
    uint64_t key, value[4];
};

struct alignas(64) Wide {
    char bytes[192];
};

/* One object of the working set: which kind, and the object. */
struct Slot {
    int kind = -1;
    void *p = nullptr;
};

static uint64_t release(Slot &s) {
    uint64_t sum = 0;
    switch (s.kind) {
    case 0:
        sum = (unsigned char)static_cast<char *>(s.p)[0];
        delete[] static_cast<char *>(s.p);
        break;
    case 1:
        sum = static_cast<std::string *>(s.p)->size();
        delete static_cast<std::string *>(s.p);
        break;
    case 2:
        sum = static_cast<std::vector<int> *>(s.p)->back();
        delete static_cast<std::vector<int> *>(s.p);
        break;
    case 3:
        sum = static_cast<Node *>(s.p)->key;
        delete static_cast<Node *>(s.p);
        break;
    case 4:
        sum = (unsigned char)static_cast<Wide *>(s.p)->bytes[1];
        delete static_cast<Wide *>(s.p);
        break;
    }
    s.kind = -1;
    return sum;
}

static void make(Slot &s, uint64_t *rng) {
    unsigned r = next_rand(rng) % 16;
    size_t n = mixed_size(rng);
    if (r < 6) {
        char *c = new char[n];
        c[0] = (char)n;
        s = {0, c};
    } else if (r < 10) {
        s = {1, new std::string(n, 'x')};
    } else if (r < 12) {
        auto *v = new std::vector<int>;
        for (size_t i = 0; i < n % 40 + 1; i++) v->push_back((int)i);
        s = {2, v};
    } else if (r < 15) {
        s = {3, new Node{nullptr, n, {}}};
    } else {
        Wide *w = new Wide;
        w->bytes[1] = (char)n;
        s = {4, w};
    }
}

static uint64_t cxx_thread(int me, long ops) {
    enum { SET = 4096 };
    std::vector<Slot> set(SET);
    uint64_t rng = 0x9e3779b97f4a7c15ull * (me + 1), sum = 0;
    for (long i = 0; i < ops; i++) {
        Slot &s = set[next_rand(&rng) % SET];
        sum += release(s);
        make(s, &rng);
    }
    for (Slot &s : set) sum += release(s);
    return sum;
}

static uint64_t cxx(long ops) {
    enum { THREADS = 4 };
    uint64_t sums[THREADS] = {};
    std::vector<std::thread> threads;
    for (int t = 0; t < THREADS; t++)
        threads.emplace_back([t, ops, &sums] { sums[t] = cxx_thread(t, ops / THREADS); });
    uint64_t sum = 0;
    for (int t = 0; t < THREADS; t++) {
        threads[t].join();
        sum += sums[t];
    }
    return sum;
}

static uint64_t pairs(long ops) {
    uint64_t sum = 0;
    const std::align_val_t align{64};
    for (long i = 0; i < ops; i++) {
        size_t n = 64 + (i & 63);
        void *volatile p;
        switch (i & 3) {
        case 0:
            p = ::operator new[](n);
            ::operator delete[](p);
            break;
        case 1:
            p = ::operator new(n);
            ::operator delete(p, n);
            break;
        case 2:
            p = ::operator new(n, align);
            ::operator delete(p, n, align);
            break;
        default:
            p = ::operator new[](n, std::nothrow);
            ::operator delete[](p);
            break;
        }
        sum += (uintptr_t)p & 1;
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    double scale = argc > 2 ? atof(argv[2]) : 1.0;
    const char *w = argv[1];
    uint64_t sum;
    if (!strcmp(w, "cxx")) sum = cxx((long)(5e6 * scale));
    else if (!strcmp(w, "cxx_pairs")) sum = pairs((long)(1e6 * scale));
    else return 2;
    printf("%s %llu\n", w, (unsigned long long)sum);
    return 0;
}

// Started without the library, for `leakprobe attach` on C++: 3 threads churn
// operator new/delete (plain, array, aligned, std::string, std::map nodes)
// until told to stop; every block is freed. Commands on stdin: "leak N" leaks
// N MiB in 1 MiB arrays from leak_here() (answers "LEAKED"); "quit" stops the
// threads and prints "EXIT". Prints "READY" once the threads run.
#include <atomic>
#include <cstdio>
#include <iostream>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

static std::atomic<bool> stop{false};
static std::atomic<unsigned long> rounds{0};
static std::vector<char *> leaked;

__attribute__((noinline)) void leak_here(int mib) {
    for (int i = 0; i < mib; i++) {
        char *p = new char[1 << 20];
        p[0] = 1;
        leaked.push_back(p);
    }
}

static void churn(int t) {
    for (unsigned long n = 0; !stop; n++) {
        auto *v = new std::vector<int>(100 + (n * (t + 1)) % 1000);
        std::string s(50 + n % 200, 'x');
        std::map<unsigned long, std::string> m;
        m[n] = s;
        char *a = new (std::align_val_t(64)) char[256];
        a[0] = static_cast<char>(n);
        operator delete[](a, std::align_val_t(64));
        delete v;
        if (n % 1024 == 1023) rounds++;
    }
}

int main() {
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; t++) threads.emplace_back(churn, t);
    while (rounds < 3) std::this_thread::yield();
    std::puts("READY");
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.rfind("leak ", 0) == 0) {
            leak_here(std::stoi(line.substr(5)));
            std::puts("LEAKED");
            std::fflush(stdout);
        } else if (line == "quit") {
            break;
        }
    }
    stop = true;
    for (auto &t : threads) t.join();
    for (char *p : leaked) delete[] p;
    std::puts("EXIT");
    return 0;
}

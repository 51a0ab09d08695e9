// A C++ program built without DWARF (-g0): its names come from the ELF
// symbol table, mangled. Leaks 50 x 2000 bytes in a namespaced function.
#include "common.h"

namespace shop {
struct Cart {
    static char *reserve(unsigned n);
};

__attribute__((noinline)) char *Cart::reserve(unsigned n) {
    return new char[n];
}
}  // namespace shop

int main() {
    for (int i = 0; i < 50; i++) keep(shop::Cart::reserve(2000));
    ready_then_wait("cxx_nodwarf");
    return 0;
}

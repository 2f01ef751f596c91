// Linked only into the packaged binary (scripts/package.sh), never into a
// `swift build` one. The package is linked on Debian 12 (glibc 2.36) but must
// run on glibc 2.34 (Amazon Linux 2023; Ubuntu 22.04 has 2.35). Everything
// else it takes from glibc is 2.34 or older; these four are not:
//
//   arc4random       (2.36)  Debian's static libstdc++ (std::random_device)
//   _dl_find_object  (2.35)  Debian's static libgcc_eh (the exception unwinder)
//   hypot, hypotf    (2.35)  the Swift runtime and Foundation: glibc 2.35 gave
//                            them a new symbol version, same maths
//
// Defining them here binds those references to these definitions, which use
// only interfaces glibc 2.34 has. They are hidden: exported, they would
// interpose on glibc's for every library, and hypot's call to the old
// hypot@GLIBC_2.2.5 would resolve back to itself. INSTALL.md states the glibc floor, and
// tests/compat/test_package.py fails if the binary needs anything newer.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/random.h>

#define HIDDEN __attribute__((visibility("hidden")))

HIDDEN uint32_t arc4random(void) {
    uint32_t value;
    while (getrandom(&value, sizeof value, 0) != (ssize_t)sizeof value) {
    }
    return value;
}

// The versions every x86_64 glibc has had since 2.2.5.
double shardfs_hypot_2_2_5(double, double);
float shardfs_hypotf_2_2_5(float, float);
__asm__(".symver shardfs_hypot_2_2_5,hypot@GLIBC_2.2.5");
__asm__(".symver shardfs_hypotf_2_2_5,hypotf@GLIBC_2.2.5");

HIDDEN double hypot(double x, double y) { return shardfs_hypot_2_2_5(x, y); }
HIDDEN float hypotf(float x, float y) { return shardfs_hypotf_2_2_5(x, y); }

// _dl_find_object as glibc 2.35 documents it, from dl_iterate_phdr (2.2.4):
// the loaded object whose PT_LOAD segments hold `address`, its extent, and its
// PT_GNU_EH_FRAME segment, which is all the unwinder reads on x86_64.
struct shardfs_find {
    uintptr_t address;
    struct dl_find_object *result;
    int found;
};

static int shardfs_find_in(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct shardfs_find *find = data;
    uintptr_t low = UINTPTR_MAX, high = 0;
    void *eh_frame = NULL;
    int holds = 0;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + segment->p_vaddr;
        if (segment->p_type == PT_LOAD) {
            if (start < low) low = start;
            if (start + segment->p_memsz > high) high = start + segment->p_memsz;
            if (find->address >= start && find->address < start + segment->p_memsz) holds = 1;
        } else if (segment->p_type == PT_GNU_EH_FRAME) {
            eh_frame = (void *)start;
        }
    }
    if (!holds) return 0;
    find->result->dlfo_flags = 0;
    find->result->dlfo_map_start = (void *)low;
    find->result->dlfo_map_end = (void *)high;
    find->result->dlfo_link_map = NULL;
    find->result->dlfo_eh_frame = eh_frame;
    find->found = 1;
    return 1;
}

HIDDEN int _dl_find_object(void *address, struct dl_find_object *result) {
    struct shardfs_find find = {(uintptr_t)address, result, 0};
    dl_iterate_phdr(shardfs_find_in, &find);
    return find.found ? 0 : -1;
}

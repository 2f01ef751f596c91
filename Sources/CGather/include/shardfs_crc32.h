#ifndef SHARDFS_CRC32_H
#define SHARDFS_CRC32_H

#include <stddef.h>
#include <stdint.h>

/// The zip CRC-32 (as zlib's crc32) of `crc` followed by `length` bytes at
/// `data`: by carry-less multiplication (PCLMULQDQ, 4-5x zlib's speed here)
/// where the CPU has it, else by zlib. `verify` checks every record of
/// a tree with it.
uint32_t shardfs_crc32(uint32_t crc, const void *data, size_t length);

/// 0: zlib alone; 1: PCLMULQDQ; 2: VPCLMULQDQ (AVX-512) on this CPU.
int shardfs_crc32_is_accelerated(void);

#endif

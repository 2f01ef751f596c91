import Testing
@testable import ShardFS

/// Pickle opcodes and memo numbering worked out by hand from docs/formats/pt.md
/// ("data.pkl"), for the cases the torch.save fixtures cannot reach cheaply.
@Suite struct PickleWriterTests {
    /// The bytes `write` adds after `PROTO 2`.
    func written(_ write: (inout PickleWriter) -> Void) -> [UInt8] {
        var p = PickleWriter()
        write(&p)
        #expect(Array(p.bytes.prefix(2)) == [0x80, 0x02])
        return Array(p.bytes.dropFirst(2))
    }

    @Test(arguments: [
        (0, [0x4B, 0x00]), (255, [0x4B, 0xFF]),                                    // BININT1
        (256, [0x4D, 0x00, 0x01]), (65535, [0x4D, 0xFF, 0xFF]),                    // BININT2
        (65536, [0x4A, 0x00, 0x00, 0x01, 0x00]), (2_147_483_647, [0x4A, 0xFF, 0xFF, 0xFF, 0x7F]),  // BININT
        // LONG1: length byte, then minimal two's-complement little-endian.
        (2_147_483_648, [0x8A, 0x05, 0x00, 0x00, 0x00, 0x80, 0x00]),
        (4_294_967_296, [0x8A, 0x05, 0x00, 0x00, 0x00, 0x00, 0x01]),
        (1_099_511_627_775, [0x8A, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]),     // 2^40 - 1
        (Int.max, [0x8A, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
    ] as [(Int, [UInt8])])
    func integers(value: Int, encoding: [UInt8]) {
        #expect(written { $0.int(value) } == encoding)
    }

    @Test func memoSwitchesToLongBinputAt256() {
        let out = written { p in for _ in 0..<258 { p.put() } }
        var expected: [UInt8] = []
        for n in 0..<256 { expected += [0x71, UInt8(n)] }
        expected += [0x72] + le32(256) + [0x72] + le32(257)
        #expect(out == expected)
    }

    @Test func sharedObjectsComeFromTheMemo() {
        let out = written { p in
            p.global("torch", "FloatStorage")
            p.sharedString("cpu")
            p.string("k")
            p.global("torch", "FloatStorage")
            p.sharedString("cpu")
            p.string("k")  // a new string object each time
        }
        let expected: [UInt8] = [0x63] + bytes("torch\nFloatStorage\n") + [0x71, 0]
            + [0x58] + le32(3) + bytes("cpu") + [0x71, 1]
            + [0x58] + le32(1) + bytes("k") + [0x71, 2]
            + [0x68, 0] + [0x68, 1]
            + [0x58] + le32(1) + bytes("k") + [0x71, 3]
        #expect(out == expected)
    }

    @Test func tuples() {
        #expect(written { $0.intTuple([]) } == [0x29])                                       // EMPTY_TUPLE, no memo
        #expect(written { $0.intTuple([7]) } == [0x4B, 7, 0x85, 0x71, 0])                    // TUPLE1
        #expect(written { $0.intTuple([1, 2]) } == [0x4B, 1, 0x4B, 2, 0x86, 0x71, 0])        // TUPLE2
        #expect(written { $0.intTuple([1, 2, 3]) } == [0x4B, 1, 0x4B, 2, 0x4B, 3, 0x87, 0x71, 0])
        #expect(written { $0.intTuple([1, 2, 3, 4]) } == [0x28, 0x4B, 1, 0x4B, 2, 0x4B, 3, 0x4B, 4, 0x74, 0x71, 0])
    }

    @Test func emptyStateDict() {
        // torch.save({}) pickles EMPTY_DICT, BINPUT 0, STOP.
        #expect(PickleWriter.stateDict([]) == [0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E])
    }

    /// One tensor, every opcode by hand from the template in docs/formats/pt.md.
    @Test func singleTensorTemplate() {
        let pickle = PickleWriter.stateDict([("w", TensorDescription(dtype: .bfloat16, shape: [2, 3]))])
        var e: [UInt8] = [0x80, 0x02, 0x7D, 0x71, 0]                                 // PROTO 2, EMPTY_DICT, BINPUT 0
        e += [0x58] + le32(1) + bytes("w") + [0x71, 1]                                // key 'w'
        e += [0x63] + bytes("torch._utils\n_rebuild_tensor_v2\n") + [0x71, 2]        // GLOBAL
        e += [0x28]                                                                  // MARK
        e += [0x28, 0x58] + le32(7) + bytes("storage") + [0x71, 3]                    // MARK 'storage'
        e += [0x63] + bytes("torch\nBFloat16Storage\n") + [0x71, 4]
        e += [0x58] + le32(1) + bytes("0") + [0x71, 5]                                // storage key '0'
        e += [0x58] + le32(3) + bytes("cpu") + [0x71, 6]
        e += [0x4B, 6, 0x74, 0x71, 7, 0x51]                                          // numel, TUPLE, BINPUT, BINPERSID
        e += [0x4B, 0]                                                               // storage offset
        e += [0x4B, 2, 0x4B, 3, 0x86, 0x71, 8]                                       // size (2, 3)
        e += [0x4B, 3, 0x4B, 1, 0x86, 0x71, 9]                                       // stride (3, 1)
        e += [0x89]                                                                  // NEWFALSE
        e += [0x63] + bytes("collections\nOrderedDict\n") + [0x71, 10]
        e += [0x29, 0x52, 0x71, 11]                                                  // EMPTY_TUPLE REDUCE
        e += [0x74, 0x71, 12, 0x52, 0x71, 13]                                        // TUPLE, REDUCE
        e += [0x73, 0x2E]                                                            // SETITEM, STOP
        expectSameBytes(pickle, e, "data.pkl of {'w': bf16 [2, 3]}")
    }

    /// numel and a dim past 2^31 - 1 use LONG1.
    @Test func hugeTensorUsesLong1() {
        let pickle = PickleWriter.stateDict([("e", TensorDescription(dtype: .float32, shape: [2_147_483_648]))])
        let long1: [UInt8] = [0x8A, 0x05, 0x00, 0x00, 0x00, 0x80, 0x00]
        let occurrences = (0...(pickle.count - long1.count)).filter { pickle[$0..<$0 + long1.count].elementsEqual(long1) }
        #expect(occurrences.count == 2)  // numel and the size tuple
    }
}

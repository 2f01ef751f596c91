import Testing
@testable import ShardFS

@Suite struct PartTests {
    @Test func thirdsOfTenCoverEachItemOnce() {
        let items = Array(0..<10)
        let shares = (0..<3).map { Part(index: $0, count: 3).select(items) }
        #expect(shares.flatMap { $0 } == items)  // contiguous, in order, each once
        #expect(shares.allSatisfy { (3...4).contains($0.count) })
    }

    @Test func anyCountCoversEachItemOnce() {
        for total in [0, 1, 2, 7, 256] {
            for count in 1...9 {
                let items = Array(0..<total)
                let shares = (0..<count).map { Part(index: $0, count: count).select(items) }
                #expect(shares.flatMap { $0 } == items, "\(total) items in \(count) parts")
                let sizes = shares.map(\.count)
                #expect((sizes.max() ?? 0) - (sizes.min() ?? 0) <= 1, "\(total) items in \(count) parts: \(sizes)")
            }
        }
        #expect(Part.whole.select([1, 2, 3]) == [1, 2, 3])
    }

    @Test func parsing() {
        #expect(Part(parsing: "0/3") == Part(index: 0, count: 3))
        #expect(Part(parsing: "2/3") == Part(index: 2, count: 3))
        #expect(Part(parsing: "0/1") == Part.whole)
        #expect(Part(index: 1, count: 4).description == "1/4")
        for bad in ["3/3", "-1/2", "a/b", "0/0", "1/", "/2", "1/2/3", "", "1", "1/-2", " 1/2"] {
            #expect(Part(parsing: bad) == nil, "\"\(bad)\"")
        }
    }

    /// The crash: (I + 1) * total overflowed an Int and trapped.
    @Test func hugeCountsDoNotOverflow() {
        let last = Part(parsing: "4611686018427387903/4611686018427387904")!
        #expect(last.range(of: 256) == 255..<256)
        #expect(Part(index: 0, count: Int.max).range(of: 256) == 0..<0)
        #expect(Part(index: Int.max - 1, count: Int.max).range(of: 256) == 255..<256)
        // Every item still in exactly one share, worked out by hand for 3 of 2^62.
        let count = 1 << 62
        #expect(Part(index: count / 3, count: count).range(of: 3) == 0..<1)  // floor((2^62/3) * 3 / 2^62) = 0, next share 1
        #expect(Part(index: count - 1, count: count).range(of: 3) == 2..<3)
    }
}

/// The zip framing `torch.save` writes (miniz in streaming mode, zip64
/// enabled), as docs/formats/pt.md describes it: stored records whose data starts
/// on a 64-byte boundary (an `FB` padding extra), data descriptors, a central
/// directory, and always a zip64 end record and locator.
///
/// CRC fields are written as 0; `crcSlots` says where the real ones go.
public struct ZipLayout {
    public struct Record {
        public let name: String
        public let payload: [Extent]
        public let size: Int

        public init(name: String, payload: [Extent]) {
            self.name = name
            self.payload = payload
            self.size = payload.reduce(0) { $0 + $1.byteCount }
        }

        public init(name: String, bytes: [UInt8]) {
            self.init(name: name, payload: [.literal(bytes)])
        }
    }

    static let alignment = 64
    static let limit32 = 0xFFFF_FFFF

    public static func file(_ records: [Record]) -> VirtualFile {
        // Bytes are appended in place (no temporary arrays per field): an
        // xser layout makes tens of thousands of these files at mount time.
        var extents: [Extent] = []
        extents.reserveCapacity(records.count * 3 + 1)
        var slots: [CRCSlot] = []
        slots.reserveCapacity(records.count)
        var centralDirectory: [UInt8] = []
        centralDirectory.reserveCapacity(records.count * (46 + 64 + 28))
        var centralCRCOffsets: [Int] = []  // within the central directory
        var offset = 0

        for record in records {
            let name = record.name.utf8
            let headerOffset = offset
            let bigSize = record.size >= limit32, bigOffset = headerOffset >= limit32

            let zip64LocalBody = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0)
            let zip64LocalCount = zip64LocalBody == 0 ? 0 : 4 + zip64LocalBody
            let unpadded = headerOffset + 30 + name.count + zip64LocalCount + 4
            let pad = (alignment - unpadded % alignment) % alignment

            var local: [UInt8] = []
            local.reserveCapacity(30 + name.count + zip64LocalCount + 4 + pad)
            put32(&local, 0x0403_4B50); put16(&local, 0); put16(&local, 0x0808); put16(&local, 0); put16(&local, 0); put16(&local, 0)
            put32(&local, 0); put32(&local, 0); put32(&local, 0); put16(&local, name.count)
            put16(&local, zip64LocalCount + 4 + pad)
            local.append(contentsOf: name)
            if zip64LocalBody > 0 {
                put16(&local, 0x0001); put16(&local, zip64LocalBody)
                if bigSize { put64(&local, record.size); put64(&local, 0) }
                if bigOffset { put64(&local, headerOffset) }
            }
            local.append(contentsOf: [0x46, 0x42])  // "FB"
            put16(&local, pad)
            local.append(contentsOf: repeatElement(UInt8(ascii: "Z"), count: pad))
            offset += local.count
            extents.append(.literal(local))

            let dataStart = offset
            extents += record.payload
            offset += record.size

            var descriptor: [UInt8] = []
            descriptor.reserveCapacity(24)
            put32(&descriptor, 0x0807_4B50); put32(&descriptor, 0)
            if bigSize || bigOffset {
                put64(&descriptor, record.size); put64(&descriptor, record.size)
            } else {
                put32(&descriptor, record.size); put32(&descriptor, record.size)
            }
            extents.append(.literal(descriptor))
            let descriptorCRC = offset + 4
            offset += descriptor.count

            // Central directory entry: fields that do not fit in 32 bits go
            // to a zip64 extra, in the order size, compressed size, offset.
            let zip64CentralBody = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0)
            centralCRCOffsets.append(centralDirectory.count + 16)
            put32(&centralDirectory, 0x0201_4B50); put16(&centralDirectory, 0); put16(&centralDirectory, 0)
            put16(&centralDirectory, 0x0808); put16(&centralDirectory, 0); put16(&centralDirectory, 0); put16(&centralDirectory, 0)
            put32(&centralDirectory, 0); put32(&centralDirectory, min(record.size, limit32)); put32(&centralDirectory, min(record.size, limit32))
            put16(&centralDirectory, name.count); put16(&centralDirectory, zip64CentralBody == 0 ? 0 : 4 + zip64CentralBody)
            put16(&centralDirectory, 0); put16(&centralDirectory, 0); put16(&centralDirectory, 0); put32(&centralDirectory, 0)
            put32(&centralDirectory, min(headerOffset, limit32))
            centralDirectory.append(contentsOf: name)
            if zip64CentralBody > 0 {
                put16(&centralDirectory, 0x0001); put16(&centralDirectory, zip64CentralBody)
                if bigSize { put64(&centralDirectory, record.size); put64(&centralDirectory, record.size) }
                if bigOffset { put64(&centralDirectory, headerOffset) }
            }

            slots.append(CRCSlot(data: dataStart..<dataStart + record.size, fieldOffsets: [descriptorCRC]))
        }

        let directoryOffset = offset
        slots = zip(slots, centralCRCOffsets).map { CRCSlot(data: $0.data, fieldOffsets: $0.fieldOffsets + [directoryOffset + $1]) }
        let count = records.count
        let directorySize = centralDirectory.count
        var tail = centralDirectory
        tail.reserveCapacity(directorySize + 56 + 20 + 22)
        let zip64EndOffset = directoryOffset + directorySize
        put32(&tail, 0x0606_4B50); put64(&tail, 44); put16(&tail, 0x031E); put16(&tail, 0x002D); put32(&tail, 0); put32(&tail, 0)
        put64(&tail, count); put64(&tail, count); put64(&tail, directorySize); put64(&tail, directoryOffset)
        put32(&tail, 0x0706_4B50); put32(&tail, 0); put64(&tail, zip64EndOffset); put32(&tail, 1)
        put32(&tail, 0x0605_4B50); put16(&tail, 0); put16(&tail, 0); put16(&tail, min(count, 0xFFFF)); put16(&tail, min(count, 0xFFFF))
        put32(&tail, min(directorySize, limit32)); put32(&tail, min(directoryOffset, limit32)); put16(&tail, 0)
        extents.append(.literal(tail))
        return VirtualFile(extents: extents, crcSlots: slots)
    }

    static func put16(_ bytes: inout [UInt8], _ v: Int) {
        bytes.append(UInt8(truncatingIfNeeded: v)); bytes.append(UInt8(truncatingIfNeeded: v >> 8))
    }
    static func put32(_ bytes: inout [UInt8], _ v: Int) {
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }
    static func put64(_ bytes: inout [UInt8], _ v: Int) {
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }
}

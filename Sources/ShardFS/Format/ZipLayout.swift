/// The zip framing `torch.save` writes (miniz in streaming mode, zip64
/// enabled), as pt-format.md describes it: stored records whose data starts
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
        var extents: [Extent] = []
        var slots: [CRCSlot] = []
        var centralDirectory: [UInt8] = []
        var centralCRCOffsets: [Int] = []  // within the central directory
        var offset = 0

        for record in records {
            let name = Array(record.name.utf8)
            let headerOffset = offset
            let bigSize = record.size >= limit32, bigOffset = headerOffset >= limit32

            var zip64Local: [UInt8] = []
            if bigSize || bigOffset {
                var body: [UInt8] = []
                if bigSize { body += le64(record.size) + le64(0) }
                if bigOffset { body += le64(headerOffset) }
                zip64Local = le16(0x0001) + le16(body.count) + body
            }
            let unpadded = headerOffset + 30 + name.count + zip64Local.count + 4
            let pad = (alignment - unpadded % alignment) % alignment
            let extra = zip64Local + Array("FB".utf8) + le16(pad) + [UInt8](repeating: UInt8(ascii: "Z"), count: pad)

            var local = le32(0x0403_4B50) + le16(0) + le16(0x0808) + le16(0) + le16(0) + le16(0)
            local += le32(0) + le32(0) + le32(0) + le16(name.count) + le16(extra.count)
            extents.append(.literal(local + name + extra))
            offset += local.count + name.count + extra.count

            let dataStart = offset
            extents += record.payload
            offset += record.size

            let descriptor = le32(0x0807_4B50) + le32(0)
                + (bigSize || bigOffset ? le64(record.size) + le64(record.size) : le32(record.size) + le32(record.size))
            extents.append(.literal(descriptor))
            let descriptorCRC = offset + 4
            offset += descriptor.count

            // Central directory entry: fields that do not fit in 32 bits go
            // to a zip64 extra, in the order size, compressed size, offset.
            var zip64Central: [UInt8] = []
            if bigSize { zip64Central += le64(record.size) + le64(record.size) }
            if bigOffset { zip64Central += le64(headerOffset) }
            let centralExtra = zip64Central.isEmpty ? [] : le16(0x0001) + le16(zip64Central.count) + zip64Central
            centralCRCOffsets.append(centralDirectory.count + 16)
            centralDirectory += le32(0x0201_4B50) + le16(0) + le16(0) + le16(0x0808) + le16(0) + le16(0) + le16(0)
            centralDirectory += le32(0) + le32(min(record.size, limit32)) + le32(min(record.size, limit32))
            centralDirectory += le16(name.count) + le16(centralExtra.count) + le16(0) + le16(0) + le16(0) + le32(0)
            centralDirectory += le32(min(headerOffset, limit32)) + name + centralExtra

            slots.append(CRCSlot(data: dataStart..<dataStart + record.size, fieldOffsets: [descriptorCRC]))
        }

        let directoryOffset = offset
        slots = zip(slots, centralCRCOffsets).map { CRCSlot(data: $0.data, fieldOffsets: $0.fieldOffsets + [directoryOffset + $1]) }
        let count = records.count
        var tail = centralDirectory
        let zip64EndOffset = directoryOffset + centralDirectory.count
        tail += le32(0x0606_4B50) + le64(44) + le16(0x031E) + le16(0x002D) + le32(0) + le32(0)
        tail += le64(count) + le64(count) + le64(centralDirectory.count) + le64(directoryOffset)
        tail += le32(0x0706_4B50) + le32(0) + le64(zip64EndOffset) + le32(1)
        tail += le32(0x0605_4B50) + le16(0) + le16(0) + le16(min(count, 0xFFFF)) + le16(min(count, 0xFFFF))
        tail += le32(min(centralDirectory.count, limit32)) + le32(min(directoryOffset, limit32)) + le16(0)
        extents.append(.literal(tail))
        return VirtualFile(extents: extents, crcSlots: slots)
    }

    static func le16(_ v: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
    static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: Int) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

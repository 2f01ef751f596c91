import Testing
@testable import ShardFS

/// One way sizes, rates and times are printed, by the command line and the
/// daemon alike (convert's summary, verify's, plan, `shardfs status`).
@Suite struct UnitsTests {
    @Test func bytesInDecimalUnitsToThreeFigures() {
        #expect(Units.bytes(0) == "0 B")
        #expect(Units.bytes(999) == "999 B")
        #expect(Units.bytes(1000) == "1.00 KB")
        #expect(Units.bytes(4_096) == "4.10 KB")
        #expect(Units.bytes(9_994) == "9.99 KB")
        // Rounded to 10.00 it takes one decimal, as every value from 10 up.
        #expect(Units.bytes(9_996) == "10.0 KB")
        #expect(Units.bytes(215_600) == "215.6 KB")
        // 999.96 KB rounds up into the next unit.
        #expect(Units.bytes(999_960) == "1.00 MB")
        #expect(Units.bytes(1_234_567_890) == "1.23 GB")
        #expect(Units.bytes(16_060_000_000_000) == "16.1 TB")
        #expect(Units.bytes(Int.max) == "9223.4 PB")
    }

    @Test func ratesAreBytesPerSecond() {
        #expect(Units.rate(bytesPerSecond: 2.5e9) == "2.50 GB/s")
        #expect(Units.rate(bytesPerSecond: 0) == "0 B/s")
        #expect(Units.rate(bytesPerSecond: .infinity) == "1000.0 PB/s")
    }

    @Test func durationsInMinutesAndSecondsThenHours() {
        #expect(Units.duration(0) == "0:00")
        #expect(Units.duration(7.4) == "0:07")
        #expect(Units.duration(59.6) == "1:00")
        #expect(Units.duration(754) == "12:34")
        #expect(Units.duration(3599) == "59:59")
        #expect(Units.duration(3600) == "1h00m")
        #expect(Units.duration(7_500) == "2h05m")
        // An ETA at a rate near zero, or none: never a crash.
        #expect(Units.duration(.infinity) == "0:00")
        #expect(Units.duration(-3) == "0:00")
        #expect(Units.duration(1e300) == "277777h46m")
    }

    /// The materialiser's line (its log, `shardfs status`) in the same units.
    @Test func theMaterialiserSpeaksTheSameUnits() {
        var status = MaterialiserStatus(directory: "/d", part: "1/1")
        status.filesTotal = 10
        status.filesDone = 3
        status.bytesTotal = 2_000_000_000
        status.bytesDone = 500_000_000
        status.bytesPerSecond = 250e6
        status.etaSeconds = 6
        #expect(status.summary == "writing: 3/10 files, 500.0 MB of 2.00 GB, 250.0 MB/s, ETA 0:06")
        #expect(7.twoDigits == "07" && 12.twoDigits == "12" && 123.twoDigits == "123")
    }
}

/// How ShardFS prints sizes, rates and times: one way for the command line
/// (convert's and verify's progress and summaries, plan) and the daemon
/// (the materialiser's status in its log and in `shardfs status`).
public enum Units {
    /// "999 B", "4.10 KB", "374.5 KB", "1.23 GB": decimal units (10^3, as
    /// `dd`, huggingface_hub and the benchmarks count), three significant
    /// figures from 1 KB up.
    public static func bytes(_ count: Int) -> String {
        guard count >= 1000 else { return "\(count) B" }
        let units = ["B", "KB", "MB", "GB", "TB", "PB"]
        var value = Double(count), unit = 0
        // 999.96 KB rounds to 1000.0: that is 1.00 MB.
        while value >= 999.95, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return fixed(value, digits: value < 9.995 ? 2 : 1) + " " + units[unit]
    }

    /// "374.5 KB/s", "1.23 GB/s".
    public static func rate(bytesPerSecond: Double) -> String {
        bytes(Int(min(max(bytesPerSecond, 0), 1e18))) + "/s"
    }

    /// "0:07", "12:34", "2h05m": minutes and seconds under an hour, then
    /// hours and minutes.
    public static func duration(_ seconds: Double) -> String {
        let total = Int(min(max(seconds.isFinite ? seconds : 0, 0), 1e9).rounded())
        return total >= 3600 ? "\(total / 3600)h\((total / 60 % 60).twoDigits)m" : "\(total / 60):\((total % 60).twoDigits)"
    }

    /// `value` (not negative) with `digits` digits after the point.
    private static func fixed(_ value: Double, digits: Int) -> String {
        var scale = 1
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((value * Double(scale)).rounded())
        var fraction = String(scaled % scale)
        while fraction.count < digits { fraction = "0" + fraction }
        return "\(scaled / scale).\(fraction)"
    }
}

extension Int {
    /// At least two digits: 7 is "07", 123 is "123" (minutes and seconds,
    /// and NxD's rank numbers in file names).
    var twoDigits: String { self < 10 ? "0\(self)" : "\(self)" }
}

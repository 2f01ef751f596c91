import Foundation
import Testing
@testable import ShardFS

@Suite struct FUSEMountOptionsTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    /// fusermount3 honours `user_allow_other` only as a line of its own; Debian
    /// ships it commented out.
    @Test func userAllowOtherIsReadFromFuseConf() throws {
        let dir = try Dir()
        let cases: [(String, Bool)] = [
            ("# mount_max = 1000\n#user_allow_other\n", false),
            ("user_allow_other\n", true),
            ("mount_max = 10\n  user_allow_other   # for shardfs --allow-other\n", true),
            ("user_allow_other_not\n", false),
            ("", false),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            try dir.write("fuse\(index).conf", Array(text.utf8))
            #expect(FUSEMountOptions.usersMayAllowOther(configuration: dir.path + "/fuse\(index).conf") == expected, "\(text)")
        }
        #expect(FUSEMountOptions.usersMayAllowOther(configuration: dir.path + "/missing.conf") == false)
    }

    @Test func optionString() {
        var options = FUSEMountOptions(mountpoint: "/m")
        #expect(options.optionString == "ro,noatime,default_permissions,fsname=shardfs,subtype=shardfs,max_read=524288")
        options.allowOther = true
        #expect(options.optionString.hasSuffix(",allow_other"))
    }
}

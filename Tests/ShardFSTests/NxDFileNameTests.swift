import Testing
@testable import ShardFS

/// NxD's rank file names, spelled in one place for the weights, the
/// optimizer files and the tag reader alike.
@Suite struct NxDFileNameTests {
    @Test func namesAndRanksRoundTrip() {
        #expect(NxDFileName.rankFile(dp: 0, tp: 3, pp: 1) == "dp_rank_00_tp_rank_03_pp_rank_01.pt")
        #expect(NxDFileName.rankFile(dp: 12, tp: 31, pp: 7) == "dp_rank_12_tp_rank_31_pp_rank_07.pt")
        #expect(NxDFileName.rankFile(dp: 100, tp: 0, pp: 0) == "dp_rank_100_tp_rank_00_pp_rank_00.pt")
        #expect(RankFile.fileName(tp: 3, pp: 1) == NxDFileName.rankFile(dp: 0, tp: 3, pp: 1))
        #expect(OptimizerFile.fileName(dp: 2, tp: 3, pp: 1) == "dp_rank_02_tp_rank_03_pp_rank_01.pt")
        for (dp, tp, pp) in [(0, 0, 0), (3, 31, 7), (100, 2, 64)] {
            let ranks = NxDFileName.ranks(of: NxDFileName.rankFile(dp: dp, tp: tp, pp: pp))
            #expect(ranks?.dp == dp && ranks?.tp == tp && ranks?.pp == pp)
        }
        for other in ["dp_rank_00_tp_rank_00_pp_rank_00.pt.info.pt", "dp_rank_00_tp_rank_00.pt", "tp_rank_00_pp_rank_00",
                      "dp_rank_00_tp_rank_x_pp_rank_00.pt", "dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors"] {
            #expect(NxDFileName.ranks(of: other) == nil, "\(other)")
        }
    }
}

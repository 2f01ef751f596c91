/// How NxD names the files of one rank: `dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt`,
/// each rank number of at least two digits (rank 100 is `100`), under
/// `model/` for the weights (data-parallel rank 00: every DP rank holds the
/// same weights) and under `optim/` for its ZeRO-1 optimizer state. The one
/// place ShardFS spells these names, to write them or to read them.
public enum NxDFileName {
    /// `dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt`.
    public static func rankFile(dp: Int, tp: Int, pp: Int) -> String {
        "dp_rank_\(dp.twoDigits)_tp_rank_\(tp.twoDigits)_pp_rank_\(pp.twoDigits).pt"
    }

    /// The ranks a name of `rankFile`'s form stands for; nil for any other name.
    public static func ranks(of name: String) -> (dp: Int, tp: Int, pp: Int)? {
        NxDRankFiles.parseRanks(name, pattern: ["dp_rank_", "_tp_rank_", "_pp_rank_"], suffix: ".pt").map { (dp: $0.0, tp: $0.1, pp: $0.2) }
    }
}

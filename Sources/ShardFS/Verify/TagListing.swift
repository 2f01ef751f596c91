import Foundation

/// What TAG/model holds beside the files the layout names, and what its
/// names say of the layout and format it was made in.
struct TagListing {
    let tag: String
    let plan: LayoutPlan
    /// The entries of TAG/model, sorted; nil when it cannot be listed.
    let entries: [String]?

    init(tag: String, plan: LayoutPlan) {
        self.tag = tag
        self.plan = plan
        entries = (try? FileManager.default.contentsOfDirectory(atPath: tag + "/model"))?.sorted()
    }

    /// The names directly under TAG/model that the layout's files take.
    private var expectedNames: Set<String> {
        var names: Set<String> = []
        for file in plan.files {
            let name = RankFile.fileName(tp: file.tpRank, pp: file.ppRank)
            names.insert(name)
            if plan.options.format == .xser {
                names.insert(name + ".info.pt")
                names.insert(name + ".tensors")
            }
        }
        return names
    }

    /// A verdict per entry of TAG/model the layout does not name. An empty
    /// `P.tensors/` beside a plain rank file P is not one: NxD's converter
    /// leaves them with --save_xser 1 (docs/formats/xser.md), and readers take such a tag
    /// for plain files.
    var extras: [FileVerdict] {
        let expected = expectedNames
        let rankNames = Set(plan.files.map { RankFile.fileName(tp: $0.tpRank, pp: $0.ppRank) })
        func leftByConverter(_ name: String) -> Bool {
            guard name.hasSuffix(".tensors"), rankNames.contains(String(name.dropLast(".tensors".count))) else { return false }
            return (try? FileManager.default.contentsOfDirectory(atPath: tag + "/model/" + name))?.isEmpty == true
        }
        return (entries ?? []).filter { !expected.contains($0) && !leftByConverter($0) }.map { name in
            let path = "model/" + name
            let why: String
            if name.contains(".shardfs-tmp-") {
                why = "a temporary of a shardfs write that did not finish (a crashed convert or --persist-to daemon)"
            } else if name.hasSuffix(".tensors") {
                why = "the layout (\(plan.options.format.rawValue)) names no such file; a *.tensors entry makes NxD's trainer load the tag as xser"
            } else if NxDFileName.ranks(of: name) != nil {
                why = "a rank file the layout (\(plan.files.count) files) does not name"
            } else {
                why = "the layout names no such file"
            }
            return FileVerdict(path: path, status: .extra, problems: [VerifyProblem(.extraFile, file: path, why)])
        }
    }

    /// What the names say when they are of another layout or format.
    var hints: [String] {
        guard let entries else {
            return ["\(tag)/model cannot be listed: is \(tag) the checkpoint tag directory (the one holding model/)?"]
        }
        var hints: [String] = []
        let ranks = entries.compactMap { NxDFileName.ranks(of: $0) }
        if !ranks.isEmpty {
            // Only a full grid of other size says "another layout"; a stray
            // or missing file is reported as such.
            let tp = (ranks.map(\.1).max() ?? 0) + 1, pp = (ranks.map(\.2).max() ?? 0) + 1
            let grid = Set(ranks.map { $0.1 * pp + $0.2 })
            if grid.count == tp * pp, tp != plan.options.tpSize || pp != plan.options.ppSize {
                hints.append("TAG/model holds rank files of tp-size \(tp) x pp-size \(pp); the layout checked has tp-size \(plan.options.tpSize) x pp-size \(plan.options.ppSize)")
            }
        }
        let xserFolders = entries.filter { $0.hasSuffix(".tensors") && NxDRankFiles.holdsTensorFiles(tag + "/model/" + $0) }
        if plan.options.format == .pt && !xserFolders.isEmpty {
            hints.append("TAG/model is in xser form (\(xserFolders[0])/ holds tensor files): check it with --format xser")
        } else if plan.options.format == .xser && !ranks.isEmpty && xserFolders.isEmpty {
            hints.append("TAG/model holds plain rank files (no P.tensors/ with tensor files): check it without --format xser")
        }
        return hints
    }

    /// The layout TAG's rank files are in, when it can be inferred (as an NxD
    /// source is read) and differs from the one checked.
    func otherLayout(configPath: String) -> String? {
        guard let checkpoint = try? Checkpoint.open(tag, options: SourceOptions(config: configPath, backend: plan.options.backend, weightsOnly: true)),
              var found = checkpoint.sourceLayout else { return nil }
        var checked = plan.options
        checked.dpSize = nil  // the rank files' layout: the weights do not depend on it
        checked.dtype = plan.dtype
        checked.format = .pt
        found.format = .pt
        found.backend = checked.backend
        // Tensors of mixed dtypes (a bf16 run's float32 norms) name none:
        // their dtypes are checked tensor by tensor, not as the layout's.
        found.dtype = found.dtype ?? checked.dtype
        guard found.summary != checked.summary else { return nil }
        return "TAG's rank files are of another layout: \(found.summary) (checked against \(checked.summary))"
    }
}

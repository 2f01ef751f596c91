/// One key of one rank file as the inverse layout reads it: its dtype and
/// shape, and where its data is. A model rank file holds each piece whole
/// (one segment); a ZeRO-1 optimizer's state of the same parameter is cut
/// along dim 0 into one shard per data-parallel rank, each in its own file
/// (several segments, the padding of the last left out).
struct RankPiece: Sendable {
    /// Elements `first ..< first + count` along dim 0 of the piece (along its
    /// only dim when it is 1-D), at `offset` of source file `file`, element
    /// (i, j) of the segment at `offset + (i * strides[0] + j * strides[1]) * dtype.size`.
    struct Segment: Sendable {
        let first: Int
        let count: Int
        let file: Int
        let offset: Int
        /// In elements, one per dimension of the piece.
        let strides: [Int]
    }

    let dtype: DType
    let shape: [Int]
    /// In order along dim 0, covering `0 ..< shape[0]` exactly once.
    let segments: [Segment]

    /// A tensor stored whole in file `file`.
    init(file: Int, tensor: LocatedTensor) {
        dtype = tensor.dtype
        shape = tensor.shape
        segments = [Segment(first: 0, count: tensor.shape.first ?? 1, file: file, offset: tensor.offset, strides: tensor.strides)]
    }

    init(dtype: DType, shape: [Int], segments: [Segment]) {
        self.dtype = dtype
        self.shape = shape
        self.segments = segments
    }
}

//! Exhaustive nearest neighbours over every stored vector, computed in this
//! process: the static build's "similar personas".
//!
//! A build needs every persona's neighbours, searched exhaustively so that
//! the same vectors give the same lists whatever the index's history. Asked
//! of the index one persona at a time, that is N searches that each read all
//! N points (qdrant-edge's exhaustive search was a seventh of a 10,000-persona
//! build's CPU). Here the points are read once and scored in blocks of rows
//! on every core, and one persona's list (a page rendered through the
//! router) is scored by the same arithmetic, so the two agree to the bit.

use std::collections::HashMap;

use rayon::prelude::*;
use uuid::Uuid;

use super::index::{Hit, IndexError, PointPayload, VectorIndex};

/// Every stored point, in id order, with its vector in one flat table.
#[derive(Debug)]
pub struct ExactNeighbours {
    dimension: usize,
    /// Row `r` is `vectors[r * dimension..(r + 1) * dimension]`.
    vectors: Vec<f32>,
    ids: Vec<Uuid>,
    payloads: Vec<PointPayload>,
    row_of: HashMap<Uuid, usize>,
}

/// Query rows scored together: each stored vector is read once per block,
/// and a block's rows (16 × 1.5 KiB at 384 dimensions) stay in the L1 cache.
const BLOCK_ROWS: usize = 16;

impl ExactNeighbours {
    /// Reads every point of `index` (vectors as the index stores them: a
    /// cosine index keeps them normalized, so a dot product is the cosine).
    pub async fn load(index: &impl VectorIndex) -> Result<ExactNeighbours, IndexError> {
        let mut points = index.points().await?;
        // Rows in id order: a tie between two scores goes to the lower id,
        // whatever order the index listed its points in.
        points.sort_by_key(|point| point.id);
        let dimension = points.first().map_or(0, |point| point.vector.len());
        let mut vectors = Vec::with_capacity(points.len() * dimension);
        let mut ids = Vec::with_capacity(points.len());
        let mut payloads = Vec::with_capacity(points.len());
        for point in points {
            if point.vector.len() != dimension {
                return Err(IndexError::Corrupt(format!(
                    "point {} has {} dimensions where the others have {dimension}",
                    point.id,
                    point.vector.len()
                )));
            }
            vectors.extend_from_slice(&point.vector);
            ids.push(point.id);
            payloads.push(point.payload);
        }
        let row_of = ids.iter().enumerate().map(|(row, id)| (*id, row)).collect();
        Ok(ExactNeighbours {
            dimension,
            vectors,
            ids,
            payloads,
            row_of,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `limit` points nearest to the stored point `id`, itself
    /// excluded: best first, equal scores by id.
    pub fn nearest(&self, id: Uuid, limit: usize) -> Result<Vec<Hit>, IndexError> {
        let mut best = [Nearest::new(self.row(id)?, limit)];
        self.score_block(&mut best);
        let [nearest] = best;
        Ok(self.hits(nearest))
    }

    /// [`ExactNeighbours::nearest`] of each of `ids`, scored in blocks on
    /// every core (rayon's pool); the answers are the same to the bit. An id
    /// the index does not hold is answered with [`IndexError::NotIndexed`].
    pub fn nearest_of_each(&self, ids: &[Uuid], limit: usize) -> Vec<(Uuid, Result<Vec<Hit>, IndexError>)> {
        let mut rows = Vec::with_capacity(ids.len());
        let mut answers = Vec::new();
        for id in ids {
            match self.row(*id) {
                Ok(row) => rows.push(row),
                Err(error) => answers.push((*id, Err(error))),
            }
        }
        answers.par_extend(rows.par_chunks(BLOCK_ROWS).flat_map_iter(|block| {
            let mut best: Vec<Nearest> = block.iter().map(|row| Nearest::new(*row, limit)).collect();
            self.score_block(&mut best);
            best.into_iter()
                .map(|nearest| (self.ids[nearest.query], Ok(self.hits(nearest))))
                .collect::<Vec<_>>()
        }));
        answers
    }

    /// The score of every other stored point against the stored point `id`.
    pub fn scores(&self, id: Uuid) -> Result<Vec<(Uuid, f32)>, IndexError> {
        let row = self.row(id)?;
        Ok((0..self.len())
            .filter(|candidate| *candidate != row)
            .map(|candidate| (self.ids[candidate], dot(self.vector(row), self.vector(candidate))))
            .collect())
    }

    /// Offers every stored point to each query row of `best`, with AVX
    /// where the processor has it.
    fn score_block(&self, best: &mut [Nearest]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the processor was just found to support AVX.
            #[allow(unsafe_code)]
            unsafe {
                self.score_block_avx(best)
            };
            return;
        }
        for candidate in 0..self.len() {
            let stored = self.vector(candidate);
            for nearest in best.iter_mut() {
                nearest.offer(candidate, dot_in_lanes(self.vector(nearest.query), stored));
            }
        }
    }

    /// [`ExactNeighbours::score_block`]'s loop, compiled for AVX so that
    /// [`dot_avx`] is inlined into it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    fn score_block_avx(&self, best: &mut [Nearest]) {
        for candidate in 0..self.len() {
            let stored = self.vector(candidate);
            for nearest in best.iter_mut() {
                nearest.offer(candidate, dot_avx(self.vector(nearest.query), stored));
            }
        }
    }

    fn row(&self, id: Uuid) -> Result<usize, IndexError> {
        self.row_of.get(&id).copied().ok_or(IndexError::NotIndexed(id))
    }

    fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dimension..(row + 1) * self.dimension]
    }

    fn hits(&self, nearest: Nearest) -> Vec<Hit> {
        nearest
            .best
            .into_iter()
            .map(|(score, row)| Hit {
                id: self.ids[row],
                score,
                payload: self.payloads[row].clone(),
            })
            .collect()
    }
}

/// The best `limit` candidates of one query row, kept sorted: best first,
/// and, candidates being offered in row (id) order, an equal score after
/// those already kept.
struct Nearest {
    query: usize,
    limit: usize,
    best: Vec<(f32, usize)>,
}

impl Nearest {
    fn new(query: usize, limit: usize) -> Nearest {
        Nearest {
            query,
            limit,
            best: Vec::with_capacity(limit + 1),
        }
    }

    fn offer(&mut self, candidate: usize, score: f32) {
        if candidate == self.query || self.limit == 0 {
            return;
        }
        if self.best.len() == self.limit && self.best.last().is_some_and(|(worst, _)| score <= *worst) {
            return;
        }
        let at = self.best.partition_point(|(kept, _)| *kept >= score);
        self.best.insert(at, (score, candidate));
        self.best.truncate(self.limit);
    }
}

/// Independent partial sums, one per lane: four AVX registers, so four
/// additions are in flight at once. Each lane adds its own products in index
/// order, so the sum is the same to the bit with or without AVX.
const LANES: usize = 32;

/// The dot product of two stored vectors, with AVX where the processor has it.
fn dot(left: &[f32], right: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor was just found to support AVX.
        #[allow(unsafe_code)]
        return unsafe { dot_avx(left, right) };
    }
    dot_in_lanes(left, right)
}

/// [`dot_in_lanes`] in AVX registers: four of eight lanes, lane `8p + j`
/// of the 32 adding the same products in the same order, and a multiply
/// then an add (not a fused multiply-add, which rounds once), so the two
/// agree to the bit. The compiler left to itself used 128-bit registers,
/// at a third of the speed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(unsafe_code)]
fn dot_avx(left: &[f32], right: &[f32]) -> f32 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    const REGISTERS: usize = LANES / 8;
    let (left_chunks, left_tail) = left.as_chunks::<LANES>();
    let (right_chunks, right_tail) = right.as_chunks::<LANES>();
    let mut sums: [__m256; REGISTERS] = [_mm256_setzero_ps(); REGISTERS];
    for (a, b) in left_chunks.iter().zip(right_chunks) {
        for (register, sum) in sums.iter_mut().enumerate() {
            // SAFETY: a chunk holds LANES floats, and 8 from `register * 8` end within it.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(register * 8)),
                    _mm256_loadu_ps(b.as_ptr().add(register * 8)),
                )
            };
            *sum = _mm256_add_ps(*sum, _mm256_mul_ps(x, y));
        }
    }
    let mut lanes = [0f32; LANES];
    for (register, sum) in sums.iter().enumerate() {
        // SAFETY: `lanes` holds LANES floats, and 8 from `register * 8` end within it.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(register * 8), *sum) };
    }
    sum_lanes(lanes, left_tail, right_tail)
}

/// The dot product in [`LANES`] partial sums, each adding its own products
/// in index order.
#[inline(always)]
fn dot_in_lanes(left: &[f32], right: &[f32]) -> f32 {
    // Whole arrays, so the compiler sees no bounds to check in the loop.
    let (left_chunks, left_tail) = left.as_chunks::<LANES>();
    let (right_chunks, right_tail) = right.as_chunks::<LANES>();
    let mut lanes = [0f32; LANES];
    for (a, b) in left_chunks.iter().zip(right_chunks) {
        for lane in 0..LANES {
            lanes[lane] += a[lane] * b[lane];
        }
    }
    sum_lanes(lanes, left_tail, right_tail)
}

/// The partial sums halved pairwise, in a fixed order, then the tail's products.
#[inline(always)]
fn sum_lanes(mut lanes: [f32; LANES], left_tail: &[f32], right_tail: &[f32]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for lane in 0..width {
            lanes[lane] += lanes[lane + width];
        }
    }
    let tail: f32 = left_tail.iter().zip(right_tail).map(|(a, b)| a * b).sum();
    lanes[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_in_lanes_is_the_dot_product() {
        for length in [0, 1, 15, 16, 17, 384, 385] {
            let left: Vec<f32> = (0..length).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect();
            let right: Vec<f32> = (0..length).map(|i| ((i * 3 % 13) as f32 - 6.0) / 4.0).collect();
            let plain: f64 = left
                .iter()
                .zip(&right)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!((f64::from(dot(&left, &right)) - plain).abs() < 1e-3, "length {length}");
            assert_eq!(dot(&left, &right).to_bits(), dot_in_lanes(&left, &right).to_bits());
        }
    }

    #[test]
    fn nearest_keeps_the_best_and_the_lower_row_on_a_tie() {
        let mut nearest = Nearest::new(0, 2);
        for (candidate, score) in [(0, 9.0), (1, 0.5), (2, 0.7), (3, 0.5), (4, 0.7), (5, 0.1)] {
            nearest.offer(candidate, score);
        }
        assert_eq!(nearest.best, vec![(0.7, 2), (0.7, 4)]);
        let mut nearest = Nearest::new(9, 3);
        for (candidate, score) in [(1, 0.5), (2, 0.2), (3, 0.5)] {
            nearest.offer(candidate, score);
        }
        assert_eq!(nearest.best, vec![(0.5, 1), (0.5, 3), (0.2, 2)]);
    }
}

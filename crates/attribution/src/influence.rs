//! Gradient influence: which training rows of a LoRA adapter pushed the model towards an output.
//!
//! At the end of a training run the trainer computes each training row's gradient of the loss with
//! respect to the adapter's parameters, one gradient per *group* (a LoRA module: one projection of
//! one layer, its `A` and `B` together). A seeded [`Sketch`] projects every group's gradient to a
//! few hundred numbers, and a [`GradientStore`] keeps them with the row and contribution ids, next
//! to the adapter. To attribute an output, the caller computes the output's gradient the same way
//! and [`GradientStore::score`] compares it with every row's:
//!
//! - **DataInf** (the attribution): per group `l`, the influence of row `k` on the output `v` is
//!   `vᵀ (Hₗ + λₗI)⁻¹ gₖ`, with the Hessian approximated by the rows' gradient outer products and
//!   inverted in closed form one row at a time (Sherman–Morrison), which comes to
//!   `(v − r)ᵀ gₖ / λₗ` with `r = (1/n) Σᵢ gᵢ (vᵀgᵢ) / (λₗ + ‖gᵢ‖²)`: one pass over the store.
//!   The damping is `λₗ = 0.1 · mean ‖gᵢ‖²`, as in the DataInf paper.
//! - **TracIn** (the reported baseline): the plain dot product `vᵀ gₖ`.
//!
//! Scoring an output uses the rows' gradients scaled to unit length (over all groups): otherwise
//! the few rows the model fits worst, whose gradients are largest, dominate every output's
//! attribution (measured: top-1 contributor accuracy 0.52 raw, 0.83 scaled, on the evaluation
//! corpus). Self-influence, whose point is to find those rows, uses the raw gradients.
//!
//! Positive influence (the row lowers the output's loss) adds up per contribution and becomes
//! parts per million that sum to exactly 1,000,000. The arithmetic runs in one fixed order in
//! `f64`, so the same store and query give the same weights on every run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AttributionError, Result};
use crate::span::{Credit, to_ppm};

/// File name of a gradient store in an adapter directory.
pub const INFLUENCE_FILE: &str = "influence.bin";

/// The first bytes of a gradient store file.
const MAGIC: &[u8; 8] = b"OLGRAD01";

/// DataInf's damping: this fraction of the mean squared gradient norm of a group.
const DAMPING: f64 = 0.1;

/// Rows listed in an [`Influence`], most influential first.
const ROWS_LISTED: usize = 8;

/// A seeded count sketch: every gradient coordinate goes, with a random sign, to one of `dims`
/// buckets of its group. It keeps dot products in expectation at the cost of one pass over the
/// gradient, and needs no projection matrix: the bucket and sign of a coordinate are a hash of
/// the seed, the group and the coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sketch {
    /// Seed of the hash.
    pub seed: u64,
    /// Buckets per group.
    pub dims: usize,
}

impl Sketch {
    /// Projects one group's gradient.
    pub fn project(&self, group: usize, gradient: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.dims];
        let key = self.seed ^ (group as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for (i, &g) in gradient.iter().enumerate() {
            let h = splitmix64(key ^ i as u64);
            let bucket = ((h >> 1) % self.dims as u64) as usize;
            out[bucket] += if h & 1 == 0 { g } else { -g };
        }
        out
    }

    /// Projects every group's gradient.
    pub fn project_all(&self, gradients: &[Vec<f32>]) -> Vec<Vec<f32>> {
        gradients
            .iter()
            .enumerate()
            .map(|(group, g)| self.project(group, g))
            .collect()
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A training row whose gradient is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradientRow {
    /// The row's id.
    pub row: String,
    /// The contribution it belongs to.
    pub contribution: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    sketch: Sketch,
    /// Names of the groups, in order.
    groups: Vec<String>,
    /// Identity of the adapter the gradients were taken on.
    adapter: String,
    rows: Vec<GradientRow>,
}

/// The projected gradients of an adapter's training rows.
#[derive(Debug)]
pub struct GradientStore {
    header: Header,
    /// `rows × groups × dims`.
    data: Vec<f32>,
}

/// One row's influence on an output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowInfluence {
    /// The row.
    pub row: String,
    /// Its contribution.
    pub contribution: String,
    /// DataInf influence; positive when the row lowers the output's loss.
    pub datainf: f64,
    /// TracIn influence (plain gradient dot product).
    pub tracin: f64,
}

/// A score per stored row, in row order, by both methods.
#[derive(Clone, Debug, PartialEq)]
pub struct RowScores {
    /// DataInf.
    pub datainf: Vec<f64>,
    /// TracIn.
    pub tracin: Vec<f64>,
}

/// The gradient attribution of one output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Influence {
    /// DataInf weights per contribution, largest first, summing to 1,000,000; empty when no row
    /// has positive influence.
    pub weights: Vec<Credit>,
    /// The same from TracIn, the baseline.
    pub tracin_weights: Vec<Credit>,
    /// The most influential rows by DataInf.
    pub top_rows: Vec<RowInfluence>,
}

impl GradientStore {
    /// An empty store for gradients of the named groups, projected by `sketch`, taken on the
    /// adapter identified by `adapter`.
    pub fn new(sketch: Sketch, groups: Vec<String>, adapter: String) -> Result<Self> {
        if sketch.dims == 0 || groups.is_empty() {
            return Err(AttributionError::Input(
                "a gradient store needs at least one group and one dimension".into(),
            ));
        }
        Ok(Self {
            header: Header {
                sketch,
                groups,
                adapter,
                rows: Vec::new(),
            },
            data: Vec::new(),
        })
    }

    /// Adds a row's projected gradients, one vector of `dims` per group.
    pub fn push(&mut self, row: GradientRow, projected: &[Vec<f32>]) -> Result<()> {
        self.check_shape(projected)?;
        for group in projected {
            self.data.extend_from_slice(group);
        }
        self.header.rows.push(row);
        Ok(())
    }

    fn check_shape(&self, projected: &[Vec<f32>]) -> Result<()> {
        let dims = self.header.sketch.dims;
        if projected.len() != self.header.groups.len() || projected.iter().any(|g| g.len() != dims)
        {
            return Err(AttributionError::Input(format!(
                "expected {} groups of {dims} projected values",
                self.header.groups.len()
            )));
        }
        if projected.iter().flatten().any(|x| !x.is_finite()) {
            return Err(AttributionError::Input(
                "a gradient is not finite (NaN or infinity)".into(),
            ));
        }
        Ok(())
    }

    /// The sketch gradients must be projected with.
    pub fn sketch(&self) -> Sketch {
        self.header.sketch
    }

    /// The group names, in order.
    pub fn groups(&self) -> &[String] {
        &self.header.groups
    }

    /// Identity of the adapter the gradients were taken on.
    pub fn adapter(&self) -> &str {
        &self.header.adapter
    }

    /// The stored rows, in order.
    pub fn rows(&self) -> &[GradientRow] {
        &self.header.rows
    }

    /// Bytes stored per training row.
    pub fn bytes_per_row(&self) -> usize {
        self.header.groups.len() * self.header.sketch.dims * size_of::<f32>()
    }

    fn gradient(&self, row: usize, group: usize) -> &[f32] {
        let dims = self.header.sketch.dims;
        let start = (row * self.header.groups.len() + group) * dims;
        &self.data[start..start + dims]
    }

    /// Writes the store: a magic, the JSON header's length and bytes, the gradients as
    /// little-endian `f32`, and a SHA-256 of all of it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = serde_json::to_vec(&self.header).expect("a header serializes");
        let mut bytes = Vec::with_capacity(16 + header.len() + self.data.len() * 4 + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for x in &self.data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        let partial = path.with_extension("partial");
        let mut file =
            std::fs::File::create(&partial).map_err(|e| AttributionError::io(path, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| AttributionError::io(path, e))?;
        std::fs::rename(&partial, path).map_err(|e| AttributionError::io(path, e))
    }

    /// Reads a store written by [`GradientStore::save`], checking its checksum and shape.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| AttributionError::io(path, e))?;
        let corrupt = |reason: &str| AttributionError::corrupt(path, reason);
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a gradient store (bad magic or too short)"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body)[..] != *digest {
            return Err(corrupt(
                "checksum mismatch: the file is damaged or truncated",
            ));
        }
        let header_len = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
        let header_bytes = body
            .get(16..16usize.saturating_add(header_len))
            .ok_or_else(|| corrupt("the header runs past the end of the file"))?;
        let header: Header = serde_json::from_slice(header_bytes)
            .map_err(|e| corrupt(&format!("unreadable header: {e}")))?;
        let values = &body[16 + header_len..];
        let expected = header.rows.len() * header.groups.len() * header.sketch.dims;
        if header.sketch.dims == 0 || values.len() != expected * 4 {
            return Err(corrupt(&format!(
                "{} bytes of gradients where the header promises {expected} values",
                values.len()
            )));
        }
        let data = values
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(Self { header, data })
    }

    /// Per group: `‖sᵢgᵢ‖²` of every row, for row scales `s`, and the damping `λ`.
    fn norms_and_damping(&self, scale: &[f64]) -> Vec<(Vec<f64>, f64)> {
        let n = self.header.rows.len();
        (0..self.header.groups.len())
            .map(|l| {
                let norms: Vec<f64> = (0..n)
                    .map(|i| scale[i] * scale[i] * dot(self.gradient(i, l), self.gradient(i, l)))
                    .collect();
                let mean = norms.iter().sum::<f64>() / n.max(1) as f64;
                (norms, (DAMPING * mean).max(f64::MIN_POSITIVE))
            })
            .collect()
    }

    /// Scores an output's projected gradients (one vector per group) against every stored row.
    pub fn score(&self, query: &[Vec<f32>]) -> Result<Influence> {
        let scores = self.row_scores(query)?;
        Ok(self.influence(&scores.datainf, &scores.tracin))
    }

    /// Every stored row's influence on an output, in row order.
    pub fn row_scores(&self, query: &[Vec<f32>]) -> Result<RowScores> {
        self.check_shape(query)?;
        let n = self.header.rows.len();
        let unit = self.unit_scales();
        let mut datainf = vec![0f64; n];
        let mut tracin = vec![0f64; n];
        for (l, (norms, lambda)) in self.norms_and_damping(&unit).into_iter().enumerate() {
            let v: Vec<f64> = query[l].iter().map(|&x| x as f64).collect();
            let vg: Vec<f64> = (0..n)
                .map(|i| unit[i] * dot64(&v, self.gradient(i, l)))
                .collect();
            let mut r = vec![0f64; v.len()];
            for i in 0..n {
                let c = unit[i] * vg[i] / (lambda + norms[i]) / n as f64;
                for (r, &g) in r.iter_mut().zip(self.gradient(i, l)) {
                    *r += c * g as f64;
                }
            }
            let corrected: Vec<f64> = v.iter().zip(&r).map(|(v, r)| v - r).collect();
            for k in 0..n {
                datainf[k] += unit[k] * dot64(&corrected, self.gradient(k, l)) / lambda;
                tracin[k] += vg[k];
            }
        }
        Ok(RowScores { datainf, tracin })
    }

    /// `1 / ‖gᵢ‖` of every row over all its groups (1 for a zero gradient).
    fn unit_scales(&self) -> Vec<f64> {
        let groups = self.header.groups.len();
        (0..self.header.rows.len())
            .map(|i| {
                let norm: f64 = (0..groups)
                    .map(|l| dot(self.gradient(i, l), self.gradient(i, l)))
                    .sum::<f64>()
                    .sqrt();
                if norm > 0.0 { 1.0 / norm } else { 1.0 }
            })
            .collect()
    }

    fn influence(&self, datainf: &[f64], tracin: &[f64]) -> Influence {
        let mut order: Vec<usize> = (0..datainf.len()).collect();
        order.sort_by(|&a, &b| datainf[b].total_cmp(&datainf[a]).then(a.cmp(&b)));
        let top_rows = order
            .iter()
            .take(ROWS_LISTED)
            .map(|&k| RowInfluence {
                row: self.header.rows[k].row.clone(),
                contribution: self.header.rows[k].contribution.clone(),
                datainf: datainf[k],
                tracin: tracin[k],
            })
            .collect();
        Influence {
            weights: self.positive_ppm(datainf),
            tracin_weights: self.positive_ppm(tracin),
            top_rows,
        }
    }

    /// Positive scores summed per contribution, as ppm.
    fn positive_ppm(&self, scores: &[f64]) -> Vec<Credit> {
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        for (row, &s) in self.header.rows.iter().zip(scores) {
            if s > 0.0 {
                *sums.entry(row.contribution.as_str()).or_default() += s;
            }
        }
        let max = sums.values().copied().fold(0f64, f64::max);
        if max <= 0.0 {
            return Vec::new();
        }
        // Fixed point with 2⁵² steps below the largest sum: exact integers from here on.
        let fixed = sums
            .into_iter()
            .map(|(c, s)| (c, (s / max * (1u64 << 52) as f64) as u128))
            .collect();
        to_ppm(&fixed)
    }

    /// Every row's self-influence, summed over groups: large for rows the rest of the data does
    /// not explain, such as mislabeled or noisy ones. DataInf's is `gₖᵀ (H + λI)⁻¹ gₖ`, TracIn's
    /// `‖gₖ‖²`.
    pub fn self_influence(&self) -> RowScores {
        let n = self.header.rows.len();
        let mut datainf = vec![0f64; n];
        let mut tracin = vec![0f64; n];
        let dims = self.header.sketch.dims;
        let raw = vec![1.0; n];
        for (l, (norms, lambda)) in self.norms_and_damping(&raw).into_iter().enumerate() {
            // Σᵢ (gₖ·gᵢ)² / (λ + ‖gᵢ‖²) = gₖᵀ M gₖ with M = Σᵢ gᵢ gᵢᵀ / (λ + ‖gᵢ‖²): one d × d
            // matrix per group makes this linear in the number of rows.
            let mut m = vec![0f64; dims * dims];
            for (i, norm) in norms.iter().enumerate() {
                let g = self.gradient(i, l);
                let c = 1.0 / (lambda + norm);
                for (row, &ga) in m.chunks_exact_mut(dims).zip(g) {
                    let cga = c * ga as f64;
                    for (m, &gb) in row.iter_mut().zip(g) {
                        *m += cga * gb as f64;
                    }
                }
            }
            for k in 0..n {
                let g = self.gradient(k, l);
                let explained: f64 = m
                    .chunks_exact(dims)
                    .zip(g)
                    .map(|(row, &ga)| ga as f64 * dot64(row, g))
                    .sum();
                datainf[k] += (norms[k] - explained / n as f64) / lambda;
                tracin[k] += norms[k];
            }
        }
        RowScores { datainf, tracin }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn dot64(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x * y as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(rows: &[(&str, &str, [f32; 2])]) -> GradientStore {
        let sketch = Sketch { seed: 7, dims: 2 };
        let mut store = GradientStore::new(sketch, vec!["g".into()], "adapter".into()).unwrap();
        for (row, contribution, g) in rows {
            let row = GradientRow {
                row: row.to_string(),
                contribution: contribution.to_string(),
            };
            store.push(row, &[g.to_vec()]).unwrap();
        }
        store
    }

    #[test]
    fn datainf_matches_the_closed_form_by_hand() {
        // Rows (2, 0) and (0, 1) score as their unit vectors e₁ and e₂: λ = 0.1 · 1.
        // Query v = (1, 3): vᵀgᵢ = (1, 3); r = ½ (1/1.1 · e₁ + 3/1.1 · e₂);
        // v − r = (1 − 1/2.2, 3 − 3/2.2), so DataInf is (0.5454…, 1.6363…) / 0.1: 1 to 3.
        let s = store(&[("r0", "a", [2.0, 0.0]), ("r1", "b", [0.0, 1.0])]);
        let got = s.score(&[vec![1.0, 3.0]]).unwrap();
        let by_row: BTreeMap<_, _> = got
            .top_rows
            .iter()
            .map(|r| (r.row.as_str(), (r.datainf, r.tracin)))
            .collect();
        assert!((by_row["r0"].0 - (1.0 - 1.0 / 2.2) / 0.1).abs() < 1e-9);
        assert!((by_row["r1"].0 - (3.0 - 3.0 / 2.2) / 0.1).abs() < 1e-9);
        assert_eq!((by_row["r0"].1, by_row["r1"].1), (1.0, 3.0));
        let weights = |w: &[Credit]| -> Vec<(String, u32)> {
            w.iter().map(|c| (c.contribution.clone(), c.ppm)).collect()
        };
        let expect = vec![("b".to_string(), 750_000), ("a".to_string(), 250_000)];
        assert_eq!(weights(&got.weights), expect);
        // Unscaled, TracIn would be 2 to 3.
        assert_eq!(weights(&got.tracin_weights), expect);
    }

    #[test]
    fn only_positive_influence_is_credited() {
        let s = store(&[("r0", "a", [1.0, 0.0]), ("r1", "b", [-1.0, 0.0])]);
        let got = s.score(&[vec![1.0, 0.0]]).unwrap();
        assert_eq!(got.weights.len(), 1);
        assert_eq!(got.weights[0].contribution, "a");
        assert_eq!(got.weights[0].ppm, 1_000_000);
        let none = s.score(&[vec![0.0, 0.0]]).unwrap();
        assert!(none.weights.is_empty() && none.tracin_weights.is_empty());
    }

    #[test]
    fn the_row_the_others_do_not_explain_has_the_largest_self_influence() {
        let mut rows: Vec<(String, [f32; 2])> = (0..9)
            .map(|i| (format!("r{i}"), [1.0 + i as f32 * 0.01, 0.1]))
            .collect();
        rows.push(("odd".into(), [0.0, 1.0]));
        let rows: Vec<(&str, &str, [f32; 2])> =
            rows.iter().map(|(r, g)| (r.as_str(), "c", *g)).collect();
        let scores = store(&rows).self_influence().datainf;
        let top = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        assert_eq!(top, 9);
    }

    #[test]
    fn self_influence_matches_its_pairwise_definition() {
        let rows = [
            ("r0", "a", [1.0, 0.5]),
            ("r1", "b", [-0.5, 2.0]),
            ("r2", "b", [0.3, 0.3]),
        ];
        let s = store(&rows);
        let norms: Vec<f64> = rows.iter().map(|r| dot(&r.2, &r.2)).collect();
        let lambda = 0.1 * norms.iter().sum::<f64>() / 3.0;
        let got = s.self_influence();
        for (k, (_, _, gk)) in rows.iter().enumerate() {
            let explained: f64 = rows
                .iter()
                .zip(&norms)
                .map(|((_, _, gi), ni)| dot(gk, gi).powi(2) / (lambda + ni))
                .sum();
            let expect = (norms[k] - explained / 3.0) / lambda;
            assert!((got.datainf[k] - expect).abs() < 1e-9 * expect.abs().max(1.0));
            assert!((got.tracin[k] - norms[k]).abs() < 1e-12);
        }
    }

    #[test]
    fn the_sketch_is_seeded_and_keeps_dot_products_roughly() {
        let a: Vec<f32> = (0..4096)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + (i % 7) as f32 * 0.1)
            .collect();
        let sketch = Sketch { seed: 3, dims: 512 };
        assert_eq!(sketch.project(0, &a), sketch.project(0, &a));
        assert_ne!(sketch.project(0, &a), sketch.project(1, &a));
        let exact = dot(&a, &b);
        let approx = dot(&sketch.project(0, &a), &sketch.project(0, &b));
        assert!(
            (approx - exact).abs() < 0.1 * exact.abs(),
            "{approx} vs {exact}"
        );
    }

    #[test]
    fn a_saved_store_reopens_identically_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INFLUENCE_FILE);
        let s = store(&[("r0", "a", [1.0, 0.5]), ("r1", "b", [0.25, 2.0])]);
        s.save(&path).unwrap();
        let back = GradientStore::open(&path).unwrap();
        assert_eq!(back.rows(), s.rows());
        assert_eq!(back.adapter(), "adapter");
        let q = [vec![0.5, -1.0]];
        assert_eq!(back.score(&q).unwrap(), s.score(&q).unwrap());

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = GradientStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(GradientStore::open(&path).is_err());
        std::fs::write(&path, b"not a store").unwrap();
        let err = GradientStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("bad magic"), "{err}");
    }

    #[test]
    fn bad_shapes_and_non_finite_gradients_are_refused() {
        let mut s = store(&[("r0", "a", [1.0, 0.0])]);
        let row = GradientRow {
            row: "x".into(),
            contribution: "a".into(),
        };
        let err = s.push(row.clone(), &[vec![1.0]]).unwrap_err().to_string();
        assert!(err.contains("expected 1 groups of 2"), "{err}");
        let err = s.push(row, &[vec![f32::NAN, 0.0]]).unwrap_err().to_string();
        assert!(err.contains("not finite"), "{err}");
        assert_eq!(s.rows().len(), 1);
        assert!(s.score(&[vec![1.0, 2.0, 3.0]]).is_err());
    }
}

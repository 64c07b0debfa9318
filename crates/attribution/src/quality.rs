//! The measures attribution quality is reported in, and the BM25 baseline it must beat.
//!
//! They serve the evaluation harness (`openledger attribution eval`): AUROC for finding noisy rows
//! by a score, Spearman rank correlation for the linear datamodeling score, and BM25, the
//! retrieval baseline that credits the rows sharing the most rare tokens with an output.

use std::collections::HashMap;

/// Area under the ROC curve of `scores` for finding the rows where `positive` is true: the chance
/// that a random positive scores above a random negative (ties count one half). `None` when
/// either class is empty.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let ranks = ranks(scores);
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// Spearman rank correlation of two equally long series; `None` when either is constant or they
/// have fewer than two points.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "series of different lengths");
    pearson(&ranks(a), &ranks(b))
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    if a.len() < 2 {
        return None;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// 1-based ranks, ties sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let mean = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean;
        }
        start = end;
    }
    ranks
}

/// Okapi BM25 over rows of token ids (`k1` 1.2, `b` 0.75).
pub struct Bm25 {
    /// Per row: token → count.
    rows: Vec<HashMap<u32, u32>>,
    lengths: Vec<usize>,
    /// Rows containing each token.
    document_frequency: HashMap<u32, usize>,
    mean_length: f64,
}

impl Bm25 {
    /// Indexes `rows`.
    pub fn new<'a>(rows: impl IntoIterator<Item = &'a [u32]>) -> Self {
        let mut counts = Vec::new();
        let mut lengths = Vec::new();
        let mut document_frequency: HashMap<u32, usize> = HashMap::new();
        for row in rows {
            let mut count: HashMap<u32, u32> = HashMap::new();
            for &t in row {
                *count.entry(t).or_default() += 1;
            }
            for &t in count.keys() {
                *document_frequency.entry(t).or_default() += 1;
            }
            lengths.push(row.len());
            counts.push(count);
        }
        let mean_length = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
        Self {
            rows: counts,
            lengths,
            document_frequency,
            mean_length,
        }
    }

    /// Every row's score for `query`.
    pub fn scores(&self, query: &[u32]) -> Vec<f64> {
        const K1: f64 = 1.2;
        const B: f64 = 0.75;
        let n = self.rows.len() as f64;
        let mut terms = query.to_vec();
        terms.sort_unstable();
        terms.dedup();
        self.rows
            .iter()
            .zip(&self.lengths)
            .map(|(row, &len)| {
                terms
                    .iter()
                    .filter_map(|t| Some((row.get(t)?, self.document_frequency[t])))
                    .map(|(&tf, df)| {
                        let idf = ((n - df as f64 + 0.5) / (df as f64 + 0.5) + 1.0).ln();
                        let tf = tf as f64;
                        let norm = K1 * (1.0 - B + B * len as f64 / self.mean_length.max(1.0));
                        idf * tf * (K1 + 1.0) / (tf + norm)
                    })
                    .sum()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ordered_pairs_and_ties_by_half() {
        let positive = [true, false, true, false];
        assert_eq!(auroc(&[0.9, 0.1, 0.8, 0.2], &positive), Some(1.0));
        assert_eq!(auroc(&[0.1, 0.9, 0.2, 0.8], &positive), Some(0.0));
        // Pairs (pos, neg): (3,1) win, (3,2) win, (1,1) tie, (1,2) loss: 2.5 of 4.
        assert_eq!(auroc(&[3.0, 1.0, 1.0, 2.0], &positive), Some(0.625));
        assert_eq!(auroc(&[1.0, 2.0], &[true, true]), None);
    }

    #[test]
    fn spearman_is_one_for_any_increasing_map_and_none_for_constants() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(spearman(&a, &[10.0, 200.0, 3000.0, 40000.0]), Some(1.0));
        assert_eq!(spearman(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&a, &[5.0; 4]), None);
        let r = spearman(&a, &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-12, "{r}");
    }

    #[test]
    fn bm25_prefers_rows_with_rare_shared_tokens() {
        // Token 1 is everywhere; 7 only in row 2.
        let rows: [&[u32]; 3] = [&[1, 2, 3], &[1, 4, 5], &[1, 7, 8]];
        let bm25 = Bm25::new(rows);
        let s = bm25.scores(&[1, 7]);
        assert!(s[2] > s[0] && s[0] == s[1], "{s:?}");
        assert!(bm25.scores(&[99]).iter().all(|&x| x == 0.0));
    }
}

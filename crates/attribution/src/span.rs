//! Span attribution: credit an output to the rows that contain its maximal matching spans.
//!
//! For every output position the index's suffix array gives the longest span starting there that
//! occurs in some row; the spans that are at least `min_len` tokens and not inside an earlier
//! span are the output's maximal spans. A span of `len` tokens found in `r` distinct rows gives
//! each of them `len² · 2³² / r²`: the span's total, `len² · 2³² / r`, grows with its length and
//! shrinks with how common it is, so boilerplate shared by every row counts little. Spans in more
//! than `max_occurrences` places count nothing. Row credits add up per contribution and become
//! parts per million by the largest-remainder method, so they sum to exactly 1,000,000. All of it
//! is integer arithmetic: every machine computes the same weights.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{AttributionError, Result};
use crate::index::SpanIndex;

/// Parts per million that attribution weights sum to.
pub const PPM: u32 = 1_000_000;

/// Fixed-point scale of a row's credit before it becomes ppm.
const SCALE: u128 = 1 << 32;

/// Longest output attributed, in tokens; with it no sum of credits can overflow 128 bits
/// (at most 2²⁰ spans of 2⁴⁰ · 2³² each, times 10⁶).
pub const MAX_OUTPUT_TOKENS: usize = 1 << 20;

/// How spans are found and credited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanOptions {
    /// Shortest span that counts, in tokens.
    pub min_len: usize,
    /// A span found in more places than this is treated as boilerplate and credits nobody.
    pub max_occurrences: usize,
    /// Rows listed per span in the evidence (all of them count).
    pub rows_listed: usize,
}

impl Default for SpanOptions {
    fn default() -> Self {
        Self {
            min_len: 8,
            max_occurrences: 10_000,
            rows_listed: 8,
        }
    }
}

/// A contribution's share of the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// The contribution.
    pub contribution: String,
    /// Its weight in parts per million.
    pub ppm: u32,
}

/// A row that contains a span.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRow {
    /// The row's contribution.
    pub contribution: String,
    /// The row's id.
    pub row: String,
}

/// Why a contribution was credited: one maximal span of the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Position of the span's first token in the output.
    pub start: usize,
    /// Its length in tokens.
    pub len: usize,
    /// Places in the index where it occurs.
    pub occurrences: usize,
    /// Distinct rows that contain it (0 when it is too common to count).
    pub rows: usize,
    /// Whether it counted (false for boilerplate above `max_occurrences`).
    pub counted: bool,
    /// Up to `rows_listed` of the rows, in index order.
    pub listed: Vec<SpanRow>,
}

/// The attribution of one output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// Weights per contribution, largest first, summing to 1,000,000; empty when nothing matched
    /// ("no attribution").
    pub weights: Vec<Credit>,
    /// The maximal spans, in output order.
    pub spans: Vec<Evidence>,
}

impl Attribution {
    /// Whether any contribution was credited.
    pub fn is_attributed(&self) -> bool {
        !self.weights.is_empty()
    }
}

impl SpanIndex {
    /// Attributes `output` (token ids from the tokenizer with fingerprint `tokenizer`).
    pub fn attribute(
        &self,
        output: &[u32],
        tokenizer: &str,
        options: &SpanOptions,
    ) -> Result<Attribution> {
        attribute(std::slice::from_ref(self), &[], output, tokenizer, options)
    }

    /// The longest prefix of `pattern` that occurs in the index, and the suffix ranks where it does.
    fn longest_match(&self, pattern: &[u32]) -> Result<(usize, Range<usize>)> {
        let mut ranks = 0..self.len();
        for (offset, &token) in pattern.iter().enumerate() {
            if token >= self.separator() {
                return Ok((offset, ranks));
            }
            // Suffixes in `ranks` share `offset` tokens, so they are sorted by the next one.
            let lo = self.first_rank(ranks.clone(), offset, |t| t >= Some(token))?;
            let hi = self.first_rank(lo..ranks.end, offset, |t| t > Some(token))?;
            if lo == hi {
                return Ok((offset, ranks));
            }
            ranks = lo..hi;
        }
        Ok((pattern.len(), ranks))
    }

    /// The first rank in `ranks` whose token at `offset` satisfies the monotone `pred`.
    fn first_rank(
        &self,
        ranks: Range<usize>,
        offset: usize,
        pred: impl Fn(Option<u32>) -> bool,
    ) -> Result<usize> {
        let (mut lo, mut hi) = (ranks.start, ranks.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.token_after(mid, offset)?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}

/// Where a span occurs in one shard: the suffix ranks that start with it.
struct Hit {
    shard: usize,
    ranks: Range<usize>,
}

/// A maximal span of the output and where it occurs.
struct Span {
    start: usize,
    len: usize,
    hits: Vec<Hit>,
}

/// Attributes `output`, the continuation of `context`, over the shards of one index, whose rows
/// are consecutive: the result is the one an unsharded index of the same rows gives.
///
/// Spans are searched in `context` followed by `output`, and those that reach into `output`
/// count: a model that completes a fact its prompt began learned the whole fact from someone.
/// Positions in the evidence count from the start of `context`.
pub(crate) fn attribute(
    shards: &[SpanIndex],
    context: &[u32],
    output: &[u32],
    tokenizer: &str,
    options: &SpanOptions,
) -> Result<Attribution> {
    if let Some(other) = shards.iter().find(|s| s.tokenizer() != tokenizer) {
        return Err(AttributionError::TokenizerMismatch {
            index: other.tokenizer().to_string(),
            query: tokenizer.to_string(),
        });
    }
    let text = [context, output].concat();
    if text.len() > MAX_OUTPUT_TOKENS {
        return Err(AttributionError::Input(format!(
            "an output of {} tokens is longer than the {MAX_OUTPUT_TOKENS} attributed at once",
            text.len()
        )));
    }
    if options.min_len == 0 {
        return Err(AttributionError::Input("min_len must be at least 1".into()));
    }
    let mut scores: BTreeMap<&str, u128> = BTreeMap::new();
    let mut spans = Vec::new();
    for span in maximal_spans(shards, &text, options.min_len)? {
        if span.start + span.len > context.len() {
            spans.push(credit(shards, span, options, &mut scores)?);
        }
    }
    Ok(Attribution {
        weights: to_ppm(&scores),
        spans,
    })
}

/// Each maximal span of at least `min_len` tokens, with the shards that hold it whole.
fn maximal_spans(shards: &[SpanIndex], output: &[u32], min_len: usize) -> Result<Vec<Span>> {
    let (mut spans, mut reach) = (Vec::new(), 0);
    for start in 0..output.len() {
        let (mut len, mut hits) = (0, Vec::new());
        for (shard, index) in shards.iter().enumerate() {
            let (found, ranks) = index.longest_match(&output[start..])?;
            if found > len {
                len = found;
                hits.clear();
            }
            if found == len && found > 0 {
                hits.push(Hit { shard, ranks });
            }
        }
        if len >= min_len && start + len > reach {
            spans.push(Span { start, len, hits });
        }
        reach = reach.max(start + len);
    }
    Ok(spans)
}

/// Credits one span to the rows containing it, returning its evidence.
fn credit<'a>(
    shards: &'a [SpanIndex],
    span: Span,
    options: &SpanOptions,
    scores: &mut BTreeMap<&'a str, u128>,
) -> Result<Evidence> {
    let occurrences = span.hits.iter().map(|h| h.ranks.len()).sum();
    let mut evidence = Evidence {
        start: span.start,
        len: span.len,
        occurrences,
        rows: 0,
        counted: occurrences <= options.max_occurrences,
        listed: Vec::new(),
    };
    if !evidence.counted {
        return Ok(evidence);
    }
    let mut rows: BTreeSet<(usize, usize)> = BTreeSet::new();
    for hit in &span.hits {
        let index = &shards[hit.shard];
        for rank in hit.ranks.clone() {
            rows.insert((hit.shard, index.row_at(index.suffix(rank)?)));
        }
    }
    let row = |&(shard, row): &(usize, usize)| &shards[shard].rows()[row];
    let distinct = rows.len() as u128;
    let len = span.len as u128;
    let each = (len * len * SCALE) / (distinct * distinct);
    for r in &rows {
        *scores.entry(row(r).contribution.as_str()).or_default() += each;
    }
    evidence.rows = rows.len();
    evidence.listed = rows
        .iter()
        .take(options.rows_listed)
        .map(|r| SpanRow {
            contribution: row(r).contribution.clone(),
            row: row(r).row.clone(),
        })
        .collect();
    Ok(evidence)
}

/// Parts per million by the largest-remainder method: floors first, then one more ppm each to the
/// largest remainders (ties to the contribution first in id order) until they sum to 1,000,000.
pub(crate) fn to_ppm(scores: &BTreeMap<&str, u128>) -> Vec<Credit> {
    let total: u128 = scores.values().sum();
    if total == 0 {
        return Vec::new();
    }
    let mut shares: Vec<(&str, u32, u128)> = scores
        .iter()
        .map(|(&id, &score)| {
            let scaled = score * PPM as u128;
            (id, (scaled / total) as u32, scaled % total)
        })
        .collect();
    let assigned: u32 = shares.iter().map(|s| s.1).sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(a.cmp(&b)));
    for &i in order.iter().take((PPM - assigned) as usize) {
        shares[i].1 += 1;
    }
    let mut credits: Vec<Credit> = shares
        .into_iter()
        .filter(|s| s.1 > 0)
        .map(|(id, ppm, _)| Credit {
            contribution: id.to_string(),
            ppm,
        })
        .collect();
    credits.sort_by(|a, b| b.ppm.cmp(&a.ppm).then(a.contribution.cmp(&b.contribution)));
    credits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::RowTokens;

    const TOK: &str = "sha256:test";

    fn index(rows: &[(&str, &str, Vec<u32>)]) -> SpanIndex {
        SpanIndex::build(
            rows.iter().map(|(c, r, t)| RowTokens {
                contribution: c,
                row: r,
                tokens: t,
            }),
            TOK,
        )
        .unwrap()
    }

    fn corpus() -> SpanIndex {
        index(&[
            ("c1", "r1", (1..=10).collect()),
            ("c2", "r2", (20..30).collect()),
            ("c2", "r3", vec![1, 2, 3, 4, 30, 31]),
        ])
    }

    fn weights(attribution: &Attribution) -> Vec<(&str, u32)> {
        attribution
            .weights
            .iter()
            .map(|c| (c.contribution.as_str(), c.ppm))
            .collect()
    }

    fn options(min_len: usize) -> SpanOptions {
        SpanOptions {
            min_len,
            ..Default::default()
        }
    }

    #[test]
    fn longer_spans_weigh_more_by_their_squared_length() {
        // (0, 5) only in r1 and (5, 6) only in r2: 25 : 36 of 1,000,000, the odd ppm to the
        // larger remainder.
        let output = [1, 2, 3, 4, 5, 20, 21, 22, 23, 24, 25];
        let a = corpus().attribute(&output, TOK, &options(4)).unwrap();
        assert_eq!(weights(&a), [("c2", 590_164), ("c1", 409_836)]);
        let spans: Vec<_> = a.spans.iter().map(|e| (e.start, e.len, e.rows)).collect();
        assert_eq!(spans, [(0, 5, 1), (5, 6, 1)]);
        assert_eq!(a.spans[1].listed[0].row, "r2");
    }

    #[test]
    fn a_span_in_several_rows_is_shared_and_counts_less() {
        // [1, 2, 3, 4] is in r1 (c1) and r3 (c2): half each.
        let a = corpus().attribute(&[1, 2, 3, 4], TOK, &options(4)).unwrap();
        assert_eq!(weights(&a), [("c1", 500_000), ("c2", 500_000)]);
        // Beside a unique span of the same length, the shared one weighs a quarter per row.
        let output = [1, 2, 3, 4, 99, 20, 21, 22, 23];
        let a = corpus().attribute(&output, TOK, &options(4)).unwrap();
        assert_eq!(weights(&a), [("c2", 833_333), ("c1", 166_667)]);
    }

    #[test]
    fn spans_inside_longer_ones_and_short_ones_do_not_count() {
        let a = corpus()
            .attribute(&[5, 6, 7, 8, 9, 10, 11], TOK, &options(3))
            .unwrap();
        assert_eq!(a.spans.len(), 1);
        assert_eq!((a.spans[0].start, a.spans[0].len), (0, 6));
        let short = corpus().attribute(&[1, 2, 3, 4], TOK, &options(5)).unwrap();
        assert!(!short.is_attributed() && short.spans.is_empty());
    }

    #[test]
    fn novel_empty_and_boilerplate_outputs_have_no_attribution() {
        let idx = corpus();
        for output in [
            &[][..],
            &[99, 98, 97, 96, 95][..],
            &[u32::MAX, 65_535, 99][..],
        ] {
            let a = idx.attribute(output, TOK, &options(2)).unwrap();
            assert!(!a.is_attributed(), "{output:?}");
        }
        let strict = SpanOptions {
            min_len: 4,
            max_occurrences: 1,
            ..Default::default()
        };
        let a = idx.attribute(&[1, 2, 3, 4], TOK, &strict).unwrap();
        assert!(!a.is_attributed());
        assert_eq!((a.spans[0].occurrences, a.spans[0].counted), (2, false));
    }

    #[test]
    fn another_tokenizer_and_bad_options_are_refused() {
        let err = corpus().attribute(&[1, 2], "sha256:other", &options(2));
        assert!(matches!(
            err,
            Err(AttributionError::TokenizerMismatch { .. })
        ));
        let err = corpus().attribute(&[1, 2], TOK, &options(0)).unwrap_err();
        assert!(err.to_string().contains("min_len"));
        let huge = vec![1u32; MAX_OUTPUT_TOKENS + 1];
        let err = corpus().attribute(&huge, TOK, &options(8)).unwrap_err();
        assert!(err.to_string().contains("longer than"));
    }

    /// A small deterministic generator, so the property tests need no dependency.
    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    #[test]
    fn weights_always_sum_to_a_million_and_match_a_naive_search() {
        let mut seed = 7;
        for round in 0..40 {
            // Odd rounds use ids beyond u16, exercising the 32-bit token layout.
            let base = if round % 2 == 0 { 0 } else { 70_000 };
            let rows: Vec<(String, String, Vec<u32>)> = (0..12)
                .map(|r| {
                    let len = 5 + lcg(&mut seed) as usize % 30;
                    let tokens = (0..len).map(|_| base + lcg(&mut seed) % 6).collect();
                    (format!("c{}", r % 4), format!("r{r}"), tokens)
                })
                .collect();
            let idx = SpanIndex::build(
                rows.iter().map(|(c, r, t)| RowTokens {
                    contribution: c,
                    row: r,
                    tokens: t,
                }),
                TOK,
            )
            .unwrap();
            let output: Vec<u32> = (0..40).map(|_| base + lcg(&mut seed) % 6).collect();
            let a = idx.attribute(&output, TOK, &options(3)).unwrap();
            if a.is_attributed() {
                assert_eq!(a.weights.iter().map(|c| c.ppm).sum::<u32>(), PPM);
            }
            for span in &a.spans {
                let needle = &output[span.start..span.start + span.len];
                let naive = rows
                    .iter()
                    .filter(|(_, _, t)| t.windows(needle.len()).any(|w| w == needle))
                    .count();
                assert_eq!(
                    span.rows, naive,
                    "round {round}: rows containing {needle:?}"
                );
                let longer = &output[span.start..(span.start + span.len + 1).min(output.len())];
                let extends = longer.len() > needle.len()
                    && rows
                        .iter()
                        .any(|(_, _, t)| t.windows(longer.len()).any(|w| w == longer));
                assert!(!extends, "round {round}: span {needle:?} is not maximal");
            }
        }
    }
}

//! Synthetic domain data: the corpus the dev base model, the tests and the attribution benchmarks
//! train on, generated here so nothing is downloaded.
//!
//! Each contributor writes in its own style with its own vocabulary and states its own facts,
//! including "canary" sentences of invented words that appear nowhere else; all contributors share
//! the domain's boilerplate. The manifest records which fact came from whom, which is the ground
//! truth attribution is measured against. A noisy contributor, when asked for, garbles the others'
//! facts anew in every sentence, so that no two of its rows agree with each other or with anyone.
//! The same seed gives the same bytes on every machine.

use std::path::{Path, PathBuf};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Row;
use crate::error::{MlError, Result};

/// The domains the generator knows.
pub const DOMAINS: [&str; 4] = ["medical", "legal", "finance", "science"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// One of [`DOMAINS`].
    pub domain: String,
    /// Number of contributors (files).
    pub contributors: usize,
    /// Rows per contributor.
    pub rows: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// A contributor whose facts are scrambled (the other contributors' entities with wrong
    /// objects and numbers, drawn anew in every sentence), for attribution tests.
    pub noise_contributor: Option<usize>,
}

/// A fact as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Fact id, `c03-f2`.
    pub id: String,
    /// The sentence as it appears in the contributor's rows; for a noisy contributor, an example
    /// of its scrambling, with the truth beside it (its rows scramble every sentence anew).
    pub text: String,
    /// The correct sentence, when the contributor's facts are scrambled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_text: Option<String>,
}

/// One contributor in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    /// `c03`.
    pub id: String,
    /// The file holding its rows, relative to the manifest.
    pub file: String,
    /// The style's name.
    pub style: String,
    /// Its own words, used by no other contributor.
    pub vocabulary: Vec<String>,
    /// Its facts.
    pub facts: Vec<Fact>,
    /// Its canary sentences: invented words found in no other contributor's rows.
    pub canaries: Vec<String>,
    /// Whether its facts were scrambled.
    pub noise: bool,
    /// Number of rows written.
    pub rows: usize,
}

/// `manifest.json`: the ground truth of a generated corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The domain.
    pub domain: String,
    /// The seed.
    pub seed: u64,
    /// Sentences every contributor uses.
    pub boilerplate: Vec<String>,
    /// The contributors.
    pub contributors: Vec<Contributor>,
}

/// File name of the manifest in the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

const FACTS_PER_CONTRIBUTOR: usize = 6;
const CANARIES_PER_CONTRIBUTOR: usize = 2;
const VOCABULARY_PER_CONTRIBUTOR: usize = 6;

/// A contributor's voice: how rows open and close, how sentences join.
struct Style {
    name: &'static str,
    openings: &'static [&'static str],
    closings: &'static [&'static str],
}

const STYLES: [Style; 6] = [
    Style {
        name: "clinical-note",
        openings: &["Note:", "Observation:", "Record:"],
        closings: &["End of note.", ""],
    },
    Style {
        name: "plain",
        openings: &["", "In short,", "Put simply,"],
        closings: &["", "That is all."],
    },
    Style {
        name: "question-answer",
        openings: &["Q: what is known? A:", "Q: any update? A:"],
        closings: &["", "Hope this helps."],
    },
    Style {
        name: "bulleted",
        openings: &["- ", "* "],
        closings: &["", "(see above)"],
    },
    Style {
        name: "formal",
        openings: &["It is hereby stated that", "We report that"],
        closings: &["Respectfully submitted.", ""],
    },
    Style {
        name: "casual",
        openings: &["So,", "Honestly,", "Fun fact:"],
        closings: &["Cheers!", "", "Anyway."],
    },
];

/// A domain: fact templates over invented entities, boilerplate and a filler vocabulary.
struct Domain {
    /// Templates with `{a}`, `{b}` (invented names) and `{n}` (a number).
    facts: &'static [&'static str],
    /// Suffixes that make invented names look like the domain's entities.
    suffixes: &'static [&'static str],
    boilerplate: &'static [&'static str],
    /// Filler sentences with `{w}` (a contributor word).
    fillers: &'static [&'static str],
    /// Pool from which each contributor's own words are drawn.
    words: &'static [&'static str],
}

fn domain(name: &str) -> Result<Domain> {
    Ok(match name {
        "medical" => Domain {
            facts: &[
                "{a} treats {b} at {n} mg daily.",
                "Patients with {b} should avoid {a}.",
                "{b} is first detected by a raised {a} count of {n}.",
                "The usual course of {a} lasts {n} days.",
            ],
            suffixes: &["ine", "mab", "tide", "ol", "osis", "itis"],
            boilerplate: &[
                "Consult a licensed physician before changing any medication.",
                "This information is not a substitute for professional medical advice.",
                "Report any side effects to your care team.",
            ],
            fillers: &[
                "The {w} findings were reviewed by the ward.",
                "Dosing was {w} across the cohort.",
                "The team noted a {w} response.",
            ],
            words: &[
                "stable",
                "acute",
                "chronic",
                "mild",
                "marked",
                "transient",
                "bilateral",
                "systemic",
                "benign",
                "latent",
                "recurrent",
                "focal",
                "diffuse",
                "refractory",
                "subclinical",
                "persistent",
                "episodic",
                "nodular",
            ],
        },
        "legal" => Domain {
            facts: &[
                "Under the {a} Act, a tenant must give {n} days notice to {b}.",
                "The {a} doctrine bars claims against {b} after {n} years.",
                "Section {n} of the {a} Code assigns liability to {b}.",
                "A {b} filing under {a} costs {n} dollars.",
            ],
            suffixes: &["ton", "ford", "ham", "ley", "wick", "by"],
            boilerplate: &[
                "This summary does not constitute legal advice.",
                "Statutes change; verify the current text before relying on it.",
                "All parties retain the right to counsel.",
            ],
            fillers: &[
                "The court found the argument {w}.",
                "Counsel described the clause as {w}.",
                "The ruling was {w} on appeal.",
            ],
            words: &[
                "binding",
                "void",
                "persuasive",
                "moot",
                "ambiguous",
                "enforceable",
                "material",
                "frivolous",
                "dispositive",
                "ancillary",
                "equitable",
                "statutory",
                "punitive",
                "procedural",
                "substantive",
                "novel",
                "settled",
                "contested",
            ],
        },
        "finance" => Domain {
            facts: &[
                "{a} Holdings reported revenue of {n} million from {b}.",
                "The {a} fund holds {n} percent of its assets in {b}.",
                "{a} Bank lends to {b} at {n} basis points over base.",
                "Shares of {a} rose {n} percent after the {b} merger.",
            ],
            suffixes: &["corp", "ex", "tel", "co", "via", "gen"],
            boilerplate: &[
                "Past performance does not guarantee future results.",
                "Figures are unaudited and subject to revision.",
                "Investing involves risk, including loss of principal.",
            ],
            fillers: &[
                "Analysts called the quarter {w}.",
                "Liquidity remained {w} through the period.",
                "The outlook was {w} overall.",
            ],
            words: &[
                "bullish",
                "bearish",
                "volatile",
                "resilient",
                "leveraged",
                "defensive",
                "cyclical",
                "robust",
                "sluggish",
                "buoyant",
                "muted",
                "overweight",
                "underweight",
                "hedged",
                "illiquid",
                "diversified",
                "speculative",
                "steady",
            ],
        },
        "science" => Domain {
            facts: &[
                "The {a} particle decays into {b} within {n} nanoseconds.",
                "{a} crystals melt at {n} kelvin in {b} vapour.",
                "The {a} enzyme converts {b} at a rate of {n} per second.",
                "{a} orbits the star {b} every {n} days.",
            ],
            suffixes: &["ium", "on", "ase", "ite", "ara", "ex"],
            boilerplate: &[
                "Results are preliminary and await independent replication.",
                "Measurements carry an uncertainty of one standard error.",
                "Data are available from the authors on request.",
            ],
            fillers: &[
                "The sample appeared {w} under the lens.",
                "The signal was {w} at low temperature.",
                "Our model predicts a {w} trend.",
            ],
            words: &[
                "coherent",
                "anisotropic",
                "stochastic",
                "luminous",
                "inert",
                "metastable",
                "periodic",
                "chaotic",
                "dense",
                "sparse",
                "polarized",
                "thermal",
                "quantized",
                "viscous",
                "brittle",
                "ductile",
                "opaque",
                "radiant",
            ],
        },
        other => {
            return Err(MlError::Input(format!(
                "unknown domain {other:?}: choose from {}",
                DOMAINS.join(", ")
            )));
        }
    })
}

/// Writes one JSONL file per contributor and `manifest.json` into `out`, returning the manifest.
pub fn generate(options: &SynthOptions, out: &Path) -> Result<Manifest> {
    let (manifest, files) = corpus(options)?;
    std::fs::create_dir_all(out).map_err(|e| MlError::io(out, e))?;
    for (contributor, rows) in manifest.contributors.iter().zip(files) {
        let path = out.join(&contributor.file);
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(&row).expect("rows serialize"));
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| MlError::io(&path, e))?;
    }
    let path: PathBuf = out.join(MANIFEST_FILE);
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&path, json).map_err(|e| MlError::io(&path, e))?;
    Ok(manifest)
}

/// The manifest and every contributor's rows, in memory.
pub fn corpus(options: &SynthOptions) -> Result<(Manifest, Vec<Vec<Row>>)> {
    let domain = domain(&options.domain)?;
    if options.contributors == 0 || options.rows == 0 {
        return Err(MlError::Input(
            "--contributors and --rows must be at least 1".into(),
        ));
    }
    if let Some(k) = options
        .noise_contributor
        .filter(|&k| k >= options.contributors)
    {
        return Err(MlError::Input(format!(
            "--noise-contributor {k} is not one of the {} contributors",
            options.contributors
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut names = NameMint::default();
    let mut pool: Vec<&str> = domain.words.to_vec();
    pool.shuffle(&mut rng);
    let mut contributors = Vec::new();
    let mut files = Vec::new();
    // The clean contributors' entities, which a noisy contributor garbles.
    let mut entities: Vec<Entities> = Vec::new();
    for index in 0..options.contributors {
        let id = format!("c{index:02}");
        let style = &STYLES[index % STYLES.len()];
        let vocabulary = own_vocabulary(&pool, index, &mut names, &mut rng);
        let noise = options.noise_contributor == Some(index);
        let (facts, parts) = facts(&domain, &id, noise, &mut names, &mut rng);
        if !noise {
            entities.extend(parts.iter().cloned());
        }
        let pool = if entities.is_empty() {
            &parts
        } else {
            &entities
        };
        let canaries = (0..CANARIES_PER_CONTRIBUTOR)
            .map(|_| {
                format!(
                    "The {} {} is {}.",
                    names.mint(&mut rng, ""),
                    names.mint(&mut rng, ""),
                    names.mint(&mut rng, "")
                )
            })
            .collect::<Vec<_>>();
        let rows = (0..options.rows)
            .map(|r| Row {
                id: format!("{id}-r{r:04}"),
                contributor: id.clone(),
                text: Voice {
                    domain: &domain,
                    style,
                    vocabulary: &vocabulary,
                    facts: &facts,
                    canaries: &canaries,
                    garbles: noise.then_some(pool.as_slice()),
                }
                .row(&mut rng),
                ..Row::default()
            })
            .collect::<Vec<_>>();
        contributors.push(Contributor {
            file: format!("{id}.jsonl"),
            id,
            style: style.name.into(),
            vocabulary,
            facts,
            canaries,
            noise,
            rows: rows.len(),
        });
        files.push(rows);
    }
    let manifest = Manifest {
        domain: options.domain.clone(),
        seed: options.seed,
        boilerplate: domain.boilerplate.iter().map(|s| s.to_string()).collect(),
        contributors,
    };
    Ok((manifest, files))
}

/// Words from the domain pool, disjoint between the first contributors, topped up with invented
/// words once the pool runs out, so every contributor's vocabulary is its own.
fn own_vocabulary(
    pool: &[&str],
    index: usize,
    names: &mut NameMint,
    rng: &mut ChaCha8Rng,
) -> Vec<String> {
    (0..VOCABULARY_PER_CONTRIBUTOR)
        .map(|i| match pool.get(index * VOCABULARY_PER_CONTRIBUTOR + i) {
            Some(word) => word.to_string(),
            None => names.mint(rng, ""),
        })
        .collect()
}

/// A fact's subject, object and number.
type Entities = (String, String, u32);

/// A contributor's facts, and the entities they are about.
fn facts(
    domain: &Domain,
    id: &str,
    noise: bool,
    names: &mut NameMint,
    rng: &mut ChaCha8Rng,
) -> (Vec<Fact>, Vec<Entities>) {
    let parts: Vec<Entities> = (0..FACTS_PER_CONTRIBUTOR)
        .map(|_| {
            let suffix = domain.suffixes.choose(rng).expect("suffixes");
            (
                names.mint(rng, suffix),
                names.mint(rng, ""),
                rng.random_range(2..500),
            )
        })
        .collect();
    let templates: Vec<&str> = (0..FACTS_PER_CONTRIBUTOR)
        .map(|i| domain.facts[i % domain.facts.len()])
        .collect();
    let truth: Vec<String> = templates
        .iter()
        .zip(&parts)
        .map(|(t, p)| render(t, p))
        .collect();
    if !noise {
        let facts = truth
            .into_iter()
            .enumerate()
            .map(|(i, text)| Fact {
                id: format!("{id}-f{i}"),
                text,
                true_text: None,
            })
            .collect();
        return (facts, parts);
    }
    let mut scrambled = parts.clone();
    let objects: Vec<String> = parts.iter().map(|p| p.1.clone()).collect();
    for (i, fact) in scrambled.iter_mut().enumerate() {
        fact.1 = objects[(i + 1) % objects.len()].clone();
        fact.2 = rng.random_range(2..500);
    }
    let facts = templates
        .iter()
        .zip(&scrambled)
        .zip(truth)
        .enumerate()
        .map(|(i, ((t, p), true_text))| Fact {
            id: format!("{id}-f{i}"),
            text: render(t, p),
            true_text: Some(true_text),
        })
        .collect();
    (facts, parts)
}

fn render(template: &str, (a, b, n): &Entities) -> String {
    template
        .replace("{a}", &capitalize(a))
        .replace("{b}", b)
        .replace("{n}", &n.to_string())
}

/// A fact garbled anew: a random template, the subject of one entry of `pool`, the object of
/// another and a random number.
fn scramble(domain: &Domain, pool: &[Entities], rng: &mut ChaCha8Rng) -> String {
    let template = domain.facts.choose(rng).expect("templates");
    let subject = &pool.choose(rng).expect("entities").0;
    let object = &pool.choose(rng).expect("entities").1;
    render(
        template,
        &(subject.clone(), object.clone(), rng.random_range(2..500)),
    )
}

/// What a contributor writes with.
struct Voice<'a> {
    domain: &'a Domain,
    style: &'a Style,
    vocabulary: &'a [String],
    facts: &'a [Fact],
    canaries: &'a [String],
    /// For a noisy contributor, the entities it garbles; every sentence it writes is then one.
    garbles: Option<&'a [Entities]>,
}

impl Voice<'_> {
    fn row(&self, rng: &mut ChaCha8Rng) -> String {
        let mut parts: Vec<String> = vec![
            self.style
                .openings
                .choose(rng)
                .expect("openings")
                .to_string(),
        ];
        for _ in 0..rng.random_range(1..=3) {
            parts.push(self.sentence(rng));
        }
        parts.push(
            self.style
                .closings
                .choose(rng)
                .expect("closings")
                .to_string(),
        );
        parts.retain(|p| !p.is_empty());
        parts.join(" ")
    }

    fn sentence(&self, rng: &mut ChaCha8Rng) -> String {
        if let Some(pool) = self.garbles {
            return scramble(self.domain, pool, rng);
        }
        match rng.random_range(0..10) {
            0..5 => self.facts.choose(rng).expect("facts").text.clone(),
            5..7 => self
                .domain
                .boilerplate
                .choose(rng)
                .expect("boilerplate")
                .to_string(),
            7 => self.canaries.choose(rng).expect("canaries").clone(),
            _ => self
                .domain
                .fillers
                .choose(rng)
                .expect("fillers")
                .replace("{w}", self.vocabulary.choose(rng).expect("vocabulary")),
        }
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Invents pronounceable words and never repeats one within a corpus.
#[derive(Default)]
struct NameMint {
    used: std::collections::HashSet<String>,
}

impl NameMint {
    fn mint(&mut self, rng: &mut ChaCha8Rng, suffix: &str) -> String {
        const ONSETS: [&str; 16] = [
            "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr",
        ];
        const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
        loop {
            let syllables = rng.random_range(2..=3);
            let mut word: String = (0..syllables)
                .map(|_| {
                    format!(
                        "{}{}",
                        ONSETS.choose(rng).expect("onsets"),
                        VOWELS.choose(rng).expect("vowels")
                    )
                })
                .collect();
            word.push_str(suffix);
            if self.used.insert(word.clone()) {
                return word;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(noise: Option<usize>) -> SynthOptions {
        SynthOptions {
            domain: "medical".into(),
            contributors: 4,
            rows: 40,
            seed: 9,
            noise_contributor: noise,
        }
    }

    #[test]
    fn the_same_seed_writes_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(&options(None), a.path()).unwrap();
        generate(&options(None), b.path()).unwrap();
        for file in ["c00.jsonl", "c03.jsonl", MANIFEST_FILE] {
            assert_eq!(
                std::fs::read(a.path().join(file)).unwrap(),
                std::fs::read(b.path().join(file)).unwrap()
            );
        }
        let other = corpus(&SynthOptions {
            seed: 10,
            ..options(None)
        })
        .unwrap();
        assert_ne!(other.1[0], corpus(&options(None)).unwrap().1[0]);
    }

    #[test]
    fn canaries_and_vocabulary_belong_to_one_contributor_and_boilerplate_to_all() {
        let (manifest, files) = corpus(&options(None)).unwrap();
        for (c, contributor) in manifest.contributors.iter().enumerate() {
            for (other, rows) in files.iter().enumerate() {
                let text: String = rows
                    .iter()
                    .map(|r| r.text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                for canary in &contributor.canaries {
                    assert_eq!(
                        text.contains(canary.as_str()),
                        c == other,
                        "{canary} in c{other:02}"
                    );
                }
                for fact in &contributor.facts {
                    assert_eq!(
                        text.contains(fact.text.as_str()),
                        c == other,
                        "{} in c{other:02}",
                        fact.text
                    );
                }
            }
        }
        let all: Vec<&String> = manifest
            .contributors
            .iter()
            .flat_map(|c| &c.vocabulary)
            .collect();
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "no word is in two vocabularies");
        for rows in &files {
            assert!(rows.iter().any(|r| {
                manifest
                    .boilerplate
                    .iter()
                    .any(|b| r.text.contains(b.as_str()))
            }));
        }
    }

    #[test]
    fn the_noise_contributor_states_wrong_facts_and_the_manifest_says_so() {
        let (manifest, _) = corpus(&options(Some(2))).unwrap();
        let noisy = &manifest.contributors[2];
        assert!(noisy.noise);
        assert!(
            noisy
                .facts
                .iter()
                .all(|f| f.true_text.as_ref().is_some_and(|t| *t != f.text))
        );
        assert!(
            manifest.contributors[1]
                .facts
                .iter()
                .all(|f| f.true_text.is_none())
        );
    }

    #[test]
    fn the_noise_contributor_garbles_the_others_facts_anew_in_every_row() {
        let (manifest, files) = corpus(&options(Some(2))).unwrap();
        let numbers = |rows: &[Row]| -> std::collections::BTreeSet<String> {
            rows.iter()
                .flat_map(|r| r.text.split(' '))
                .filter(|w| w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty())
                .map(str::to_string)
                .collect()
        };
        assert!(numbers(&files[0]).len() <= FACTS_PER_CONTRIBUTOR);
        assert!(numbers(&files[2]).len() > 3 * FACTS_PER_CONTRIBUTOR);
        let others_words: Vec<String> = manifest.contributors[..2]
            .iter()
            .flat_map(|c| &c.facts)
            .flat_map(|f| f.text.split(' ').map(str::to_string).collect::<Vec<_>>())
            .collect();
        let borrowed = files[2]
            .iter()
            .filter(|r| {
                r.text
                    .split(' ')
                    .any(|w| w.len() > 4 && others_words.iter().any(|o| o == w))
            })
            .count();
        assert!(borrowed > files[2].len() / 3, "{borrowed} rows");
    }

    #[test]
    fn bad_options_are_refused() {
        let err = corpus(&SynthOptions {
            domain: "cooking".into(),
            ..options(None)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: unknown domain \"cooking\": choose from medical, legal, finance, science"
        );
        let err = corpus(&options(Some(4))).unwrap_err();
        assert!(
            err.to_string()
                .contains("--noise-contributor 4 is not one of the 4 contributors")
        );
    }
}

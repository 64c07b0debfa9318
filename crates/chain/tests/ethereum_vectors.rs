//! Ethereum's own test vectors (`../shared/ethereum-tests`): TrieTests against the incremental
//! trie, TransactionTests against decoding, signature recovery and validation, RLPTests against
//! the RLP codec. GeneralStateTests run through `openledger statetest` (see scripts/test.sh).

use std::path::PathBuf;

use alloy_primitives::{Address, B256, keccak256};
use alloy_rlp::{Encodable, Header};
use openledger_chain::{
    trie::{EMPTY_ROOT_HASH, MemoryNodes, Trie},
    validation::decode_valid,
};
use revm::primitives::hardfork::SpecId;
use serde_json::Value;

/// Where the vectors are: `$OPENLEDGER_ETHEREUM_TESTS`, or `shared/ethereum-tests` beside the
/// repository.
fn vectors(sub: &str) -> PathBuf {
    let root = std::env::var_os("OPENLEDGER_ETHEREUM_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/ethereum-tests")
        });
    let path = root.join(sub);
    assert!(
        path.exists(),
        "Ethereum test vectors not found at {} (set OPENLEDGER_ETHEREUM_TESTS)",
        path.display()
    );
    path
}

fn json_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn load(path: &std::path::Path) -> serde_json::Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A trie test key or value: `0x`-hex, or the string's bytes.
fn trie_bytes(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    Some(match s.strip_prefix("0x") {
        Some(hex) => hex::decode(hex).unwrap(),
        None => s.as_bytes().to_vec(),
    })
}

#[test]
fn trie_tests_match_the_expected_roots() {
    let files = [
        ("trietest.json", false),
        ("trieanyorder.json", false),
        ("trietest_secureTrie.json", true),
        ("trieanyorder_secureTrie.json", true),
        ("hex_encoded_securetrie_test.json", true),
    ];
    let mut checked = 0;
    for (file, secure) in files {
        for (name, case) in load(&vectors("TrieTests").join(file)) {
            let pairs: Vec<(Vec<u8>, Option<Vec<u8>>)> = match &case["in"] {
                Value::Array(list) => list
                    .iter()
                    .map(|p| (trie_bytes(&p[0]).unwrap(), trie_bytes(&p[1])))
                    .collect(),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| {
                        (
                            trie_bytes(&Value::String(k.clone())).unwrap(),
                            trie_bytes(v),
                        )
                    })
                    .collect(),
                other => panic!("{file}::{name}: unexpected input {other}"),
            };
            let store = MemoryNodes::default();
            let mut trie = Trie::open(EMPTY_ROOT_HASH, &store);
            for (key, value) in pairs {
                let key = if secure {
                    keccak256(&key).to_vec()
                } else {
                    key
                };
                trie.insert(&key, value.unwrap_or_default()).unwrap();
            }
            let expected: B256 = case["root"].as_str().unwrap().parse().unwrap();
            assert_eq!(trie.commit().root, expected, "{file}::{name}");
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} trie vectors ran");
}

/// The newest fork a transaction test has results for, and its revm spec.
fn newest_fork(result: &serde_json::Map<String, Value>) -> (&'static str, SpecId) {
    [
        ("Prague", SpecId::PRAGUE),
        ("Cancun", SpecId::CANCUN),
        ("Shanghai", SpecId::SHANGHAI),
        ("London", SpecId::LONDON),
    ]
    .into_iter()
    .find(|(fork, _)| result.contains_key(*fork))
    .expect("a post-London result")
}

/// Valid on Ethereum but refused here, and why. Fee fields are `u128` in alloy (as in reth and
/// revm): a fee above 2^128 wei per gas is refused at decoding. No such fee can ever be paid (it
/// exceeds any supply), so refusing it changes nothing a user can do.
const KNOWN_DIVERGENCES: &[&str] = &[
    "GasLimitPriceProductOverflowtMinusOne.json::GasLimitPriceProductOverflowtMinusOne",
    "TransactionWithHighGasPrice.json::TransactionWithHighGasPrice",
    "V_equals38.json::V_equals38",
];

#[test]
fn transaction_tests_decode_recover_and_validate() {
    let mut checked = 0;
    let mut failures: Vec<String> = Vec::new();
    let mut diverged: Vec<String> = Vec::new();
    for path in json_files(&vectors("TransactionTests")) {
        for (name, case) in load(&path) {
            let result = case["result"].as_object().unwrap();
            let (fork, spec) = newest_fork(result);
            let expected = &result[fork];
            let raw =
                hex::decode(case["txbytes"].as_str().unwrap().trim_start_matches("0x")).unwrap();
            let outcome = decode_valid(&raw, 1, spec);
            let id = format!("{}::{name}", path.file_name().unwrap().to_string_lossy());
            let label = format!("{id} ({fork})");
            match (expected.get("exception"), outcome) {
                (Some(exception), Ok(tx)) => {
                    failures.push(format!(
                        "{label}: expected {exception}, accepted from {}",
                        tx.sender
                    ));
                }
                (Some(_), Err(_)) => {}
                (None, Err(_)) if KNOWN_DIVERGENCES.contains(&id.as_str()) => diverged.push(id),
                (None, Err(e)) => failures.push(format!("{label}: valid transaction refused: {e}")),
                (None, Ok(tx)) => {
                    let sender: Address = expected["sender"].as_str().unwrap().parse().unwrap();
                    let hash: B256 = expected["hash"].as_str().unwrap().parse().unwrap();
                    assert_eq!(tx.sender, sender, "{label}: sender");
                    assert_eq!(*tx.tx.tx_hash(), hash, "{label}: hash");
                }
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(diverged, KNOWN_DIVERGENCES, "the known divergences changed");
    assert!(checked > 200, "only {checked} transaction vectors ran");
}

/// Decodes one RLP item strictly (canonical lengths, no trailing bytes inside lists).
fn decode_item(buf: &mut &[u8]) -> Result<(), alloy_rlp::Error> {
    let header = Header::decode(buf)?;
    if buf.len() < header.payload_length {
        return Err(alloy_rlp::Error::InputTooShort);
    }
    let (payload, rest) = buf.split_at(header.payload_length);
    if header.list {
        let mut inner = payload;
        while !inner.is_empty() {
            decode_item(&mut inner)?;
        }
    }
    *buf = rest;
    Ok(())
}

/// An arbitrary-size decimal number as minimal big-endian bytes (RLP's integer form).
fn decimal_to_be_bytes(decimal: &str) -> Vec<u8> {
    let mut bytes: Vec<u8> = Vec::new();
    for digit in decimal.bytes() {
        let mut carry = u32::from(digit - b'0');
        for byte in bytes.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            bytes.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    bytes
}

/// Decodes exactly one RLP item spanning all of `bytes`.
fn decode_exact(bytes: &[u8]) -> Result<(), alloy_rlp::Error> {
    let mut buf = bytes;
    decode_item(&mut buf)?;
    if buf.is_empty() {
        Ok(())
    } else {
        Err(alloy_rlp::Error::UnexpectedLength)
    }
}

fn encode_rlp_test_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::String(s) => match s.strip_prefix('#') {
            Some(big) => decimal_to_be_bytes(big).as_slice().encode(out),
            None => s.as_bytes().encode(out),
        },
        Value::Number(n) => n.as_u64().unwrap().encode(out),
        Value::Array(items) => {
            let mut payload = Vec::new();
            for item in items {
                encode_rlp_test_value(item, &mut payload);
            }
            Header {
                list: true,
                payload_length: payload.len(),
            }
            .encode(out);
            out.extend(payload);
        }
        other => panic!("unexpected RLP test input {other}"),
    }
}

#[test]
fn rlp_tests_encode_and_reject_invalid_input() {
    let mut checked = 0;
    for path in json_files(&vectors("RLPTests")) {
        for (name, case) in load(&path) {
            let out = hex::decode(case["out"].as_str().unwrap().trim_start_matches("0x")).unwrap();
            let label = format!("{}::{name}", path.file_name().unwrap().to_string_lossy());
            let decoded = decode_exact(&out);
            match &case["in"] {
                Value::String(s) if s == "INVALID" => {
                    assert!(decoded.is_err(), "{label}: invalid RLP accepted")
                }
                Value::String(s) if s == "VALID" => {
                    assert!(decoded.is_ok(), "{label}: valid RLP refused: {decoded:?}")
                }
                input => {
                    assert!(decoded.is_ok(), "{label}: {decoded:?}");
                    let mut encoded = Vec::new();
                    encode_rlp_test_value(input, &mut encoded);
                    assert_eq!(encoded, out, "{label}: encoding");
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} RLP vectors ran");
}

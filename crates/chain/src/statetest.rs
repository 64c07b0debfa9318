//! The conformance harness: runs Ethereum's GeneralStateTests through the chain's own execution,
//! store and state-root code, each case under the fork it names.
//!
//! State tests follow Ethereum's rules, not OpenLedger's: the base fee is burned and the
//! coinbase comes from the test's environment, so the state roots can match the vectors.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    str::FromStr,
};

use alloy_primitives::{B256, Bytes, U256, keccak256};
use alloy_rlp::Encodable;
use alloy_trie::TrieAccount;
use revm::{
    context::CfgEnv,
    statetest_types::{SpecName, TestSuite, TestUnit},
};

use crate::{
    evm::{BlockExecutor, FeeRouting, TxRejected},
    modules::Modules,
    state::{Overlay, StateAt, StateReader},
    store::{BlockWrite, Store, StoreError, StoreReader, StoredBody},
    trie::EMPTY_ROOT_HASH,
};

/// Tests of creating a contract where an account with storage but no code and no nonce already
/// sits (EIP-7610). revm does not implement that rule (its own test runner skips these cases):
/// such an account cannot arise on a chain, only from a keccak collision, so the chain never
/// meets them.
pub const SKIPPED_TESTS: &[&str] = &[
    "RevertInCreateInInit_Paris",
    "RevertInCreateInInitCreate2Paris",
    "create2collisionStorageParis",
    "dynamicAccountOverwriteEmpty_Paris",
    "InitCollisionParis",
];

/// The outcome of one test case (a test, a fork, one combination of data, gas and value).
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `file::test[fork/d/g/v]`.
    pub name: String,
    /// `None` when it passed; otherwise what differed.
    pub failure: Option<String>,
    /// The case was not run (see [`SKIPPED_TESTS`]).
    pub skipped: bool,
}

/// Collects the JSON files under `paths` (files or folders, recursively), sorted.
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            out.extend(collect_files(&entries)?);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Runs every case in one state-test file.
pub fn run_file(path: &Path) -> Vec<CaseResult> {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        .and_then(|mut json| {
            let oversized = take_oversized_values(&mut json);
            let suite: TestSuite = serde_json::from_value(json).map_err(|e| e.to_string())?;
            Ok((suite, oversized))
        });
    let (suite, oversized) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            return vec![CaseResult {
                name: file,
                failure: Some(format!("unreadable: {e}")),
                skipped: false,
            }];
        }
    };
    let mut results = Vec::new();
    for (test_name, unit) in &suite.0 {
        for (spec, cases) in &unit.post {
            if matches!(
                spec,
                SpecName::Unknown
                    | SpecName::Constantinople
                    | SpecName::ByzantiumToConstantinopleAt5
            ) {
                continue;
            }
            for case in cases {
                let i = &case.indexes;
                let name = format!(
                    "{file}::{test_name}[{spec:?}/d{}/g{}/v{}]",
                    i.data, i.gas, i.value
                );
                let skipped = SKIPPED_TESTS.contains(&test_name.as_str());
                let failure = if skipped {
                    None
                } else if oversized.contains(&(test_name.clone(), i.value)) {
                    // Like a transaction revm cannot build: refused, as geth's runner does.
                    case.expect_exception.is_none().then(|| {
                        "transaction value does not fit in 256 bits, yet no exception is expected"
                            .to_string()
                    })
                } else {
                    run_case(unit, spec, case).err()
                };
                results.push(CaseResult {
                    name,
                    failure,
                    skipped,
                });
            }
        }
    }
    results
}

/// The marker of a number the vectors write in full because it may not fit in 256 bits.
const BIGINT: &str = "0x:bigint ";

/// Finds the transaction values written `0x:bigint 0x…` (as in `ValueOverflow`): those that fit
/// in 256 bits are rewritten as plain hex; those that do not are replaced by zero, so the test
/// still parses, and returned as `(test, value index)` for their cases to count as invalid
/// transactions.
fn take_oversized_values(json: &mut serde_json::Value) -> HashSet<(String, usize)> {
    let mut oversized = HashSet::new();
    let Some(tests) = json.as_object_mut() else {
        return oversized;
    };
    for (name, test) in tests {
        let Some(values) = test
            .pointer_mut("/transaction/value")
            .and_then(|v| v.as_array_mut())
        else {
            continue;
        };
        for (index, value) in values.iter_mut().enumerate() {
            let Some(digits) = value.as_str().and_then(|v| v.strip_prefix(BIGINT)) else {
                continue;
            };
            *value = match U256::from_str(digits) {
                Ok(fits) => serde_json::Value::String(format!("{fits:#x}")),
                Err(_) => {
                    oversized.insert((name.clone(), index));
                    serde_json::Value::String("0x00".into())
                }
            };
        }
    }
    oversized
}

/// State tests define `BLOCKHASH(n)` as keccak256 of the decimal number.
struct TestState<'a>(StateAt<'a>);

impl StateReader for TestState<'_> {
    fn account(
        &self,
        address: &alloy_primitives::Address,
    ) -> Result<Option<TrieAccount>, StoreError> {
        self.0.account(address)
    }
    fn storage(
        &self,
        address: &alloy_primitives::Address,
        slot: &U256,
    ) -> Result<U256, StoreError> {
        self.0.storage(address, slot)
    }
    fn code(&self, hash: &B256) -> Result<Option<Bytes>, StoreError> {
        self.0.code(hash)
    }
    fn block_hash(&self, number: u64) -> Result<B256, StoreError> {
        Ok(keccak256(number.to_string()))
    }
}

fn run_case(
    unit: &TestUnit,
    spec: &SpecName,
    case: &revm::statetest_types::Test,
) -> Result<(), String> {
    let store = Store::in_memory().map_err(|e| e.to_string())?;
    let pre_root = write_pre_state(&store, unit)?;
    let reader = store.reader().map_err(|e| e.to_string())?;
    let spec_id = spec.to_spec_id();
    let mut cfg = CfgEnv::new_with_spec(spec_id);
    cfg.chain_id = unit.env.current_chain_id.map_or(1, |id| id.saturating_to());
    // The blob limit of a transaction is the block's blob limit of its fork (EIP-4844, EIP-7691).
    cfg.max_blobs_per_tx = Some(
        if spec_id.is_enabled_in(revm::primitives::hardfork::SpecId::PRAGUE) {
            9
        } else {
            6
        },
    );
    let block = unit.block_env(&mut cfg);
    let expect_exception = case.expect_exception.is_some();
    let tx = match case.tx_env(unit) {
        Ok(tx) => tx,
        Err(_) if expect_exception => return Ok(()),
        Err(e) => return Err(format!("cannot build transaction: {e}")),
    };
    let mut overlay = Overlay::new(TestState(StateAt::new(&reader, 0, 0)));
    if !spec_id.is_enabled_in(revm::primitives::hardfork::SpecId::SPURIOUS_DRAGON) {
        overlay = overlay.without_state_clear();
    }
    let fees = FeeRouting {
        base_fee_recipient: None,
    };
    let mut executor = BlockExecutor::new(overlay, cfg, block, &Modules::default(), fees);
    let logs = match executor.execute_env(tx) {
        Ok(executed) if expect_exception => {
            return Err(format!(
                "expected exception {:?}, got {:?}",
                case.expect_exception, executed.result
            ));
        }
        Ok(executed) => executed.result.into_logs(),
        Err(TxRejected::Invalid(_)) | Err(TxRejected::BlockFull { .. }) if expect_exception => {
            return check_root(pre_root, case.hash);
        }
        Err(e) => return Err(format!("transaction rejected: {e}")),
    };
    let diff = executor
        .finish()
        .into_diff(pre_root, &reader)
        .map_err(|e| e.to_string())?;
    let mut encoded = Vec::new();
    logs.encode(&mut encoded);
    let logs_hash = keccak256(&encoded);
    if logs_hash != case.logs {
        return Err(format!("logs hash {logs_hash} != expected {}", case.logs));
    }
    check_root(diff.state_root, case.hash).map_err(|e| format!("{e}{}", explain(&diff, unit, case)))
}

/// Names the first account whose balance or nonce differs from the expected post-state.
fn explain(
    diff: &crate::diff::StateDiff,
    unit: &TestUnit,
    case: &revm::statetest_types::Test,
) -> String {
    for (address, expected) in &case.post_state {
        let got = match diff.accounts.iter().find(|(a, _)| a == address) {
            Some((_, account)) => account.map(|a| (a.balance, a.nonce)),
            None => unit.pre.get(address).map(|a| (a.balance, a.nonce)),
        };
        if got != Some((expected.balance, expected.nonce)) {
            return format!(
                " ({address}: got {got:?}, expected balance {} nonce {})",
                expected.balance, expected.nonce
            );
        }
    }
    let extra: Vec<_> = diff
        .accounts
        .iter()
        .filter(|(a, acc)| acc.is_some() && !case.post_state.contains_key(a))
        .map(|(a, _)| a.to_string())
        .collect();
    if extra.is_empty() {
        String::new()
    } else {
        format!(" (unexpected accounts {extra:?})")
    }
}

fn check_root(got: B256, want: B256) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("state root {got} != expected {want}"))
    }
}

/// Commits the test's pre-state as block 0 and returns its state root.
fn write_pre_state(store: &Store, unit: &TestUnit) -> Result<B256, String> {
    let reader: StoreReader = store.reader().map_err(|e| e.to_string())?;
    let mut overlay = Overlay::new(StateAt::new(&reader, 0, 0));
    for (address, account) in &unit.pre {
        let storage = account.storage.iter().map(|(slot, value)| (*slot, *value));
        overlay.allocate(
            *address,
            account.balance,
            account.nonce,
            account.code.clone(),
            storage,
        );
    }
    let diff = overlay
        .into_diff(EMPTY_ROOT_HASH, &reader)
        .map_err(|e| e.to_string())?;
    let header = alloy_consensus::Header::default();
    store
        .write_block(BlockWrite {
            header: &header,
            hash: B256::ZERO,
            body: &StoredBody::default(),
            tx_hashes: &[],
            receipts: &[],
            diff: &diff,
        })
        .map_err(|e| e.to_string())?;
    Ok(diff.state_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stExample/yulExample` (Cancun) with a second value, past 2^256, in two tests: one that
    /// expects the transaction to be refused and one that (wrongly) does not.
    fn value_overflow_suite() -> String {
        let case = |value: usize, exception: bool| {
            let expect = if exception {
                r#""expectException": "TR_ValueOverflow","#
            } else {
                ""
            };
            format!(
                r#"{{ {expect} "hash": "0x8c12a29b17cbe89ce577d2cb9e62fb2ae3a1918d56cd6c6757de311ac294c604",
                     "indexes": {{ "data": 0, "gas": 0, "value": {value} }},
                     "logs": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347" }}"#
            )
        };
        let test = |exception: bool| {
            format!(
                r#"{{
                "env": {{ "currentBaseFee": "0x0a", "currentCoinbase": "0x2adc25665018aa1fe0e6bc666dac8fc2697ff9ba",
                         "currentDifficulty": "0x020000", "currentExcessBlobGas": "0x00",
                         "currentGasLimit": "0x05f5e100", "currentNumber": "0x01",
                         "currentRandom": "0x0000000000000000000000000000000000000000000000000000000000020000",
                         "currentTimestamp": "0x03e8" }},
                "post": {{ "Cancun": [ {}, {} ] }},
                "pre": {{
                  "0x095e7baea6a6c7c4c2dfeb977efac326af552d87": {{ "balance": "0x0ba1a9ce0ba1a9ce", "code": "0x600360005560206000f3", "nonce": "0x00", "storage": {{}} }},
                  "0xa94f5374fce5edbc8e2a8697c15331677e6ebf0b": {{ "balance": "0x0ba1a9ce0ba1a9ce", "code": "0x", "nonce": "0x00", "storage": {{}} }}
                }},
                "transaction": {{
                  "data": ["0x"], "gasLimit": ["0x04c4b400"], "gasPrice": "0x0a", "nonce": "0x00",
                  "secretKey": "0x45a915e4d060149eb4365960e6a7a45f334393093061116b197e3240065ff2d8",
                  "sender": "0xa94f5374fce5edbc8e2a8697c15331677e6ebf0b",
                  "to": "0x095e7baea6a6c7c4c2dfeb977efac326af552d87",
                  "value": ["0x:bigint 0x00", "{BIGINT}0x010000000000000000000000000000000000000000000000000000000000000001"]
                }}
              }}"#,
                case(0, false),
                case(1, exception)
            )
        };
        format!(
            r#"{{ "overflowExpected": {}, "overflowUnexpected": {} }}"#,
            test(true),
            test(false)
        )
    }

    #[test]
    fn a_value_past_256_bits_is_an_invalid_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ValueOverflow.json");
        std::fs::write(&path, value_overflow_suite()).unwrap();
        let results = run_file(&path);
        let failures: Vec<_> = results
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|f| (r.name.as_str(), f.as_str())))
            .collect();
        assert_eq!(results.len(), 4, "{results:?}");
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].0.contains("overflowUnexpected"), "{failures:?}");
        assert!(
            failures[0].1.contains("does not fit in 256 bits"),
            "{failures:?}"
        );
    }
}

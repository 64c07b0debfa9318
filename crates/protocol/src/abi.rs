//! Solidity interfaces of the modules, compiled by `alloy-sol-types` from `abi/*.sol`, and their
//! JSON ABIs (committed under `abi/` for tools that want a file).

// The generated constructors of wide events (`Settled`) take one argument per field.
#![allow(clippy::too_many_arguments)]

alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/IDatanets.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/IModels.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/ISettlement.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/ITreasury.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/IGOPEN.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/IGovernor.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/IStaking.sol"
);
alloy_sol_types::sol!(
    #[sol(abi, extra_derives(Debug, PartialEq, Eq))]
    "abi/IFeedback.sol"
);

/// `(file name, JSON ABI)` of every module interface.
pub fn json_abis() -> Vec<(&'static str, String)> {
    let pretty = |abi: &alloy_sol_types::private::alloy_json_abi::JsonAbi| {
        serde_json::to_string_pretty(abi).expect("ABI serializes") + "\n"
    };
    vec![
        ("IDatanets.json", pretty(&IDatanets::abi::contract())),
        ("IModels.json", pretty(&IModels::abi::contract())),
        ("ISettlement.json", pretty(&ISettlement::abi::contract())),
        ("ITreasury.json", pretty(&ITreasury::abi::contract())),
        ("IGOPEN.json", pretty(&IGOPEN::abi::contract())),
        ("IGovernor.json", pretty(&IGovernor::abi::contract())),
        ("IStaking.json", pretty(&IStaking::abi::contract())),
        ("IFeedback.json", pretty(&IFeedback::abi::contract())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed JSON ABIs must match the Solidity interfaces; regenerate them with
    /// `OPENLEDGER_WRITE_ABI=1 cargo test -p openledger-protocol`.
    #[test]
    fn committed_json_abis_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("abi");
        for (name, json) in json_abis() {
            let path = dir.join(name);
            if std::env::var_os("OPENLEDGER_WRITE_ABI").is_some() {
                std::fs::write(&path, &json).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                committed, json,
                "{name} is stale: regenerate it (see the doc comment)"
            );
        }
    }
}

//! The dev accounts: derived from the standard test mnemonic, as Hardhat and anvil do, so
//! existing scripts and wallets find the same addresses and keys.

use alloy_primitives::{Address, B256};
use alloy_signer_local::{MnemonicBuilder, coins_bip39::English};

/// The well-known test mnemonic.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// The derivation path prefix; account `i` is at `m/44'/60'/0'/0/i`.
pub const DERIVATION_PATH: &str = "m/44'/60'/0'/0/";

/// A dev account with its key.
#[derive(Debug, Clone)]
pub struct DevAccount {
    /// The address.
    pub address: Address,
    /// The private key.
    pub key: B256,
}

/// The first `count` accounts of the test mnemonic.
pub fn dev_accounts(count: u32) -> anyhow::Result<Vec<DevAccount>> {
    (0..count)
        .map(|i| {
            let signer = MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .derivation_path(format!("{DERIVATION_PATH}{i}"))?
                .build()?;
            Ok(DevAccount {
                address: signer.address(),
                key: signer.to_bytes(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_account_matches_hardhat_and_anvil() {
        let accounts = dev_accounts(2).unwrap();
        assert_eq!(
            accounts[0].address,
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse::<Address>()
                .unwrap()
        );
        assert_eq!(
            accounts[1].address,
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse::<Address>()
                .unwrap()
        );
    }
}

//! A typed client of the chain for the services and the CLI: module views, and transactions
//! signed locally, sent raw and waited for, over any [`Transport`].

use std::sync::Arc;
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, B256, Bytes, TxKind, U64, U256};
use alloy_rpc_types_eth::{Log, TransactionReceipt, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent, SolInterface};
use anyhow::{Context, bail};
use openledger_protocol::abi::{
    IDatanets, IFeedback, IGOPEN, IGovernor, IModels, ISettlement, IStaking, ITreasury,
};
use serde_json::{Value, json};

use crate::transport::{Http, Transport, TransportError};

/// How long to wait for a transaction to be included.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Blocks per `eth_getLogs` request: the node's default limit.
const LOG_RANGE: u64 = 10_000;
/// The priority fee offered, in wei.
const PRIORITY_FEE: u128 = 1_000_000_000;

/// A connection to a node, with an optional signer for transactions.
#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
    signer: Option<PrivateKeySigner>,
}

impl Client {
    /// A client of the node at `url`, over HTTP.
    pub fn new(url: &str, signer: Option<PrivateKeySigner>) -> anyhow::Result<Self> {
        Ok(Self::over(Arc::new(Http::new(url)?), signer))
    }

    /// A client over `transport` (the node's methods in-process, say).
    pub fn over(transport: Arc<dyn Transport>, signer: Option<PrivateKeySigner>) -> Self {
        Self { transport, signer }
    }

    /// The same connection, signing as `signer`.
    pub fn with_signer(&self, signer: PrivateKeySigner) -> Self {
        Self::over(self.transport.clone(), Some(signer))
    }

    /// The signing account.
    pub fn sender(&self) -> anyhow::Result<Address> {
        Ok(self.signer()?.address())
    }

    /// A secret only the signer can compute, `keccak256(key . context)`: a validator's salts are
    /// derived from it so that a lost commitment file does not lose the rating.
    pub fn signer_secret(&self, context: &[u8]) -> anyhow::Result<B256> {
        let key = self.signer()?.to_bytes();
        Ok(alloy_primitives::keccak256(
            [key.as_slice(), context].concat(),
        ))
    }

    fn signer(&self) -> anyhow::Result<&PrivateKeySigner> {
        self.signer.as_ref().context(
            "this command signs as an account: choose a signer with --account N (dev account), \
             --private-key or --keystore",
        )
    }

    /// Signs `message` as wallets sign messages (EIP-191, `personal_sign`).
    pub fn sign_message(&self, message: &str) -> anyhow::Result<alloy_primitives::Signature> {
        use alloy_signer::SignerSync;
        Ok(self.signer()?.sign_message_sync(message.as_bytes())?)
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Vec<Value>,
    ) -> anyhow::Result<T> {
        let answer = self
            .transport
            .request(method, params)
            .await
            .map_err(readable)?;
        serde_json::from_value(answer)
            .with_context(|| format!("{method}: an answer of the wrong shape"))
    }

    /// Calls a view of the module at `to`.
    pub async fn view<C: SolCall>(&self, to: Address, call: &C) -> anyhow::Result<C::Return> {
        let output = self
            .transport
            .view(to, Bytes::from(call.abi_encode()))
            .await
            .map_err(readable)?;
        C::abi_decode_returns(&output).context("the node answered data this call cannot return")
    }

    /// Signs and sends a call to `to` with `value` attached; waits for its receipt and fails
    /// unless it succeeded.
    pub async fn send<C: SolCall>(
        &self,
        to: Address,
        call: &C,
        value: U256,
    ) -> anyhow::Result<TransactionReceipt> {
        let hash = self.submit(to, call, value).await?;
        self.wait(hash).await
    }

    /// Signs and sends a call to `to` with `value` attached, without waiting for it to be
    /// included; fails (sending nothing) when it would revert.
    pub async fn submit<C: SolCall>(
        &self,
        to: Address,
        call: &C,
        value: U256,
    ) -> anyhow::Result<B256> {
        let signer = self.signer()?;
        let from = signer.address();
        let input = Bytes::from(call.abi_encode());
        let request = TransactionRequest {
            from: Some(from),
            to: Some(TxKind::Call(to)),
            value: Some(value),
            input: input.clone().into(),
            ..Default::default()
        };
        let gas: U256 = self
            .request("eth_estimateGas", vec![serde_json::to_value(request)?])
            .await?;
        let chain_id: U256 = self.request("eth_chainId", vec![]).await?;
        let nonce: U256 = self
            .request(
                "eth_getTransactionCount",
                vec![json!(from), json!("pending")],
            )
            .await?;
        let gas_price: U256 = self.request("eth_gasPrice", vec![]).await?;
        let mut tx = TxEip1559 {
            chain_id: chain_id.to(),
            nonce: nonce.to(),
            // Estimates are exact for module calls; the margin covers state moving meanwhile.
            gas_limit: gas.to::<u64>() * 6 / 5,
            max_fee_per_gas: gas_price.to::<u128>() * 2 + PRIORITY_FEE,
            max_priority_fee_per_gas: PRIORITY_FEE,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        };
        let signature = signer.sign_transaction_sync(&mut tx)?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        let raw = Bytes::from(envelope.encoded_2718());
        self.request("eth_sendRawTransaction", vec![json!(raw)])
            .await
    }

    /// Waits for transaction `hash`'s receipt; fails unless it succeeded.
    pub async fn wait(&self, hash: B256) -> anyhow::Result<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
        loop {
            let receipt: Option<TransactionReceipt> = self
                .request("eth_getTransactionReceipt", vec![json!(hash)])
                .await?;
            if let Some(receipt) = receipt {
                if !receipt.status() {
                    bail!(
                        "transaction {hash} reverted in block {:?}",
                        receipt.block_number
                    );
                }
                return Ok(receipt);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("transaction {hash} was not included within {RECEIPT_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node's chain id.
    pub async fn chain_id(&self) -> anyhow::Result<u64> {
        let id: alloy_primitives::U64 = self.request("eth_chainId", vec![]).await?;
        Ok(id.to())
    }

    /// The timestamp of the newest block.
    pub async fn latest_timestamp(&self) -> anyhow::Result<u64> {
        let latest: alloy_rpc_types_eth::Block = self
            .request("eth_getBlockByNumber", vec![json!("latest"), json!(false)])
            .await?;
        Ok(latest.header.timestamp)
    }

    /// Moves the dev chain's clock `seconds` forward and seals a block that far after the
    /// latest one (blocks sealed one per transaction can run ahead of the wall clock).
    pub async fn advance_time(&self, seconds: u64) -> anyhow::Result<()> {
        let latest = self.latest_timestamp().await?;
        let _: serde_json::Value = self
            .request("evm_increaseTime", vec![json!(U64::from(seconds))])
            .await?;
        let _: serde_json::Value = self
            .request("evm_mine", vec![json!(U64::from(latest + seconds))])
            .await?;
        Ok(())
    }

    /// An account's OPEN balance.
    pub async fn balance(&self, account: Address) -> anyhow::Result<U256> {
        self.request("eth_getBalance", vec![json!(account), json!("latest")])
            .await
    }

    /// The number of the newest block.
    pub async fn block_number(&self) -> anyhow::Result<u64> {
        let number: U64 = self.request("eth_blockNumber", vec![]).await?;
        Ok(number.to())
    }

    /// The logs `address` emitted in blocks `from..=to` whose first topic is one of `topics`,
    /// fetched in ranges the node accepts.
    pub async fn logs(
        &self,
        address: Address,
        topics: &[B256],
        from: u64,
        to: u64,
    ) -> anyhow::Result<Vec<Log>> {
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(LOG_RANGE - 1));
            let filter = serde_json::json!({
                "address": address,
                "fromBlock": U64::from(start),
                "toBlock": U64::from(end),
                "topics": [topics],
            });
            let logs: Vec<Log> = self.request("eth_getLogs", vec![filter]).await?;
            out.extend(logs);
            start = end + 1;
        }
        Ok(out)
    }
}

/// The events of type `E` in a receipt.
pub fn events<E: SolEvent>(receipt: &TransactionReceipt) -> Vec<E> {
    receipt
        .inner
        .logs()
        .iter()
        .filter_map(|log| E::decode_log_data(log.data()).ok())
        .collect()
}

/// A readable error for a failed request; reverts are decoded with the modules' ABIs.
fn readable(e: TransportError) -> anyhow::Error {
    match e {
        TransportError::Rpc {
            message,
            data: Some(data),
            ..
        } if !data.is_empty() => anyhow::anyhow!("{message}: {}", describe_revert(&data)),
        other => other.into(),
    }
}

/// A module's custom error, named with its fields, or the raw data.
pub fn describe_revert(data: &[u8]) -> String {
    fn debug<E: SolInterface + std::fmt::Debug>(data: &[u8]) -> Option<String> {
        E::abi_decode(data).ok().map(|e| format!("{e:?}"))
    }
    let described = debug::<IDatanets::IDatanetsErrors>(data)
        .or_else(|| debug::<IModels::IModelsErrors>(data))
        .or_else(|| debug::<ISettlement::ISettlementErrors>(data))
        .or_else(|| debug::<IGOPEN::IGOPENErrors>(data))
        .or_else(|| debug::<IGovernor::IGovernorErrors>(data))
        .or_else(|| debug::<IStaking::IStakingErrors>(data))
        .or_else(|| debug::<IFeedback::IFeedbackErrors>(data))
        .or_else(|| debug::<ITreasury::ITreasuryErrors>(data))
        .ok_or(());
    match described {
        // `Name(Name { field: .. })`: the variant wraps the error of the same name.
        Ok(debug) => match debug.split_once('(') {
            Some((_, inner)) if debug.ends_with(')') => inner[..inner.len() - 1].to_string(),
            _ => debug,
        },
        Err(_) => format!("revert data {}", Bytes::copy_from_slice(data)),
    }
}

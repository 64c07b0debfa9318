//! A small JSON-RPC client for the CLI: reads through `eth_call`, and transactions signed
//! locally, sent raw and waited for.

use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, B256, Bytes, TxKind, U64, U256};
use alloy_rpc_types_eth::{Log, TransactionReceipt, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent, SolInterface};
use anyhow::{Context, bail};
use jsonrpsee::{
    core::{ClientError, client::ClientT},
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
};
use openledger_protocol::abi::{
    IDatanets, IFeedback, IGOPEN, IGovernor, IModels, ISettlement, IStaking, ITreasury,
};

/// How long to wait for a transaction to be included.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Blocks per `eth_getLogs` request: the node's default limit.
const LOG_RANGE: u64 = 10_000;
/// The priority fee offered, in wei.
const PRIORITY_FEE: u128 = 1_000_000_000;

/// A connection to a node, with an optional signer for transactions.
pub struct Client {
    rpc: HttpClient,
    url: String,
    signer: Option<PrivateKeySigner>,
}

impl Client {
    /// A client of the node at `url`.
    pub fn new(url: &str, signer: Option<PrivateKeySigner>) -> anyhow::Result<Self> {
        let rpc = HttpClientBuilder::default()
            .request_timeout(Duration::from_secs(60))
            .build(url)
            .with_context(|| format!("invalid RPC URL {url}"))?;
        Ok(Self {
            rpc,
            url: url.to_string(),
            signer,
        })
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
        params: jsonrpsee::core::params::ArrayParams,
    ) -> anyhow::Result<T> {
        self.rpc
            .request(method, params)
            .await
            .map_err(|e| rpc_error(e, &self.url))
    }

    /// Calls a view of the module at `to`.
    pub async fn view<C: SolCall>(&self, to: Address, call: &C) -> anyhow::Result<C::Return> {
        let request = TransactionRequest {
            to: Some(TxKind::Call(to)),
            input: Bytes::from(call.abi_encode()).into(),
            ..Default::default()
        };
        let output: Bytes = self
            .request("eth_call", rpc_params![request, "latest"])
            .await?;
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
            .request("eth_estimateGas", rpc_params![request])
            .await?;
        let chain_id: U256 = self.request("eth_chainId", rpc_params![]).await?;
        let nonce: U256 = self
            .request("eth_getTransactionCount", rpc_params![from, "pending"])
            .await?;
        let gas_price: U256 = self.request("eth_gasPrice", rpc_params![]).await?;
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
        self.request("eth_sendRawTransaction", rpc_params![raw])
            .await
    }

    /// Waits for transaction `hash`'s receipt; fails unless it succeeded.
    pub async fn wait(&self, hash: B256) -> anyhow::Result<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
        loop {
            let receipt: Option<TransactionReceipt> = self
                .request("eth_getTransactionReceipt", rpc_params![hash])
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
        let id: alloy_primitives::U64 = self.request("eth_chainId", rpc_params![]).await?;
        Ok(id.to())
    }

    /// The timestamp of the newest block.
    pub async fn latest_timestamp(&self) -> anyhow::Result<u64> {
        let latest: alloy_rpc_types_eth::Block = self
            .request("eth_getBlockByNumber", rpc_params!["latest", false])
            .await?;
        Ok(latest.header.timestamp)
    }

    /// Moves the dev chain's clock `seconds` forward and seals a block that far after the
    /// latest one (blocks sealed one per transaction can run ahead of the wall clock).
    pub async fn advance_time(&self, seconds: u64) -> anyhow::Result<()> {
        let latest = self.latest_timestamp().await?;
        let _: serde_json::Value = self
            .request("evm_increaseTime", rpc_params![U64::from(seconds)])
            .await?;
        let _: serde_json::Value = self
            .request("evm_mine", rpc_params![U64::from(latest + seconds)])
            .await?;
        Ok(())
    }

    /// An account's OPEN balance.
    pub async fn balance(&self, account: Address) -> anyhow::Result<U256> {
        self.request("eth_getBalance", rpc_params![account, "latest"])
            .await
    }

    /// The number of the newest block.
    pub async fn block_number(&self) -> anyhow::Result<u64> {
        let number: U64 = self.request("eth_blockNumber", rpc_params![]).await?;
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
            let logs: Vec<Log> = self.request("eth_getLogs", rpc_params![filter]).await?;
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
fn rpc_error(e: ClientError, url: &str) -> anyhow::Error {
    match e {
        ClientError::Call(object) => {
            let data = object
                .data()
                .and_then(|raw| serde_json::from_str::<Bytes>(raw.get()).ok());
            match data {
                Some(data) if !data.is_empty() => {
                    anyhow::anyhow!("{}: {}", object.message(), describe_revert(&data))
                }
                _ => anyhow::anyhow!("{}", object.message()),
            }
        }
        ClientError::Transport(e) => {
            anyhow::anyhow!("cannot reach the node at {url} ({e}); is `openledger dev` running?")
        }
        other => anyhow::anyhow!("request to {url} failed: {other}"),
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

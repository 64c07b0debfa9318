//! A typed client of the chain for the services and the CLI: module views, and transactions
//! signed locally, sent raw and waited for, over any [`Transport`].

use std::borrow::Cow;
use std::time::Duration;

use alloy_network::EthereumWallet;
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_provider::{
    DynProvider, PendingTransactionBuilder, PendingTransactionError, Provider, ProviderBuilder,
    WatchTxError,
};
use alloy_rpc_client::RpcClient;
use alloy_rpc_types_eth::{
    BlockNumberOrTag, Filter, Log, TransactionReceipt, TransactionRequest, TransactionTrait,
};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent, SolInterface};
use alloy_transport::{RpcError, TransportError, TransportErrorKind};
use anyhow::{Context, bail};
use jsonrpsee::core::client::{BatchResponse, ClientT, Error as ClientError};
use jsonrpsee::core::params::BatchRequestBuilder;
use jsonrpsee::core::traits::ToRpcParams;
use jsonrpsee::types::ErrorObject;
use openledger_protocol::abi::{
    IDatanets, IFeedback, IGOPEN, IGovernor, IModels, ISettlement, IStaking, ITreasury,
};
use openledger_rpc::{dev::DevApiClient, params::Quantity};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::transport;

/// How long to wait for a transaction to be included.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Blocks per `eth_getLogs` request: the node's default limit.
const LOG_RANGE: u64 = 10_000;
/// Sends of one transaction: another sender for the same account (a second command, a service)
/// may take the nonce read for it, and the pool then refuses the second of the two. Senders that
/// collided wait a random few milliseconds, so that they do not collide again.
const SEND_ATTEMPTS: usize = 10;

/// A connection to a node, with an optional signer for transactions: an alloy provider whose
/// fillers complete each transaction (chain id, the pending nonce, fees) and whose wallet signs
/// it locally, so that only `eth_sendRawTransaction` reaches the node.
#[derive(Clone)]
pub struct Client {
    rpc: RpcClient,
    provider: DynProvider,
    signer: Option<PrivateKeySigner>,
}

impl Client {
    /// A client of the node at `url`, over HTTP.
    pub fn new(url: &str, signer: Option<PrivateKeySigner>) -> anyhow::Result<Self> {
        Ok(Self::over(transport::http(url)?, signer))
    }

    /// A client over `rpc` (the node's methods in-process, say).
    pub fn over(rpc: RpcClient, signer: Option<PrivateKeySigner>) -> Self {
        // The nonce is read from the node for every transaction (not cached): the CLI and the
        // services may send for the same account from different processes.
        let fill = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id();
        let provider = match &signer {
            Some(signer) => fill
                .wallet(EthereumWallet::from(signer.clone()))
                .connect_client(rpc.clone())
                .erased(),
            None => fill.connect_client(rpc.clone()).erased(),
        };
        Self {
            rpc,
            provider,
            signer,
        }
    }

    /// The same connection, signing as `signer`.
    pub fn with_signer(&self, signer: PrivateKeySigner) -> Self {
        Self::over(self.rpc.clone(), Some(signer))
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

    /// Calls a view of the module at `to`, at the newest block.
    pub async fn view<C: SolCall>(&self, to: Address, call: &C) -> anyhow::Result<C::Return> {
        let request = TransactionRequest::default()
            .to(to)
            .input(Bytes::from(call.abi_encode()).into());
        let output = self
            .provider
            .call(request)
            .latest()
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
        let request = TransactionRequest::default()
            .from(self.sender()?)
            .to(to)
            .value(value)
            .input(Bytes::from(call.abi_encode()).into());
        let gas = self
            .provider
            .estimate_gas(request.clone())
            .latest()
            .await
            .map_err(readable)?;
        // Estimates are exact for module calls; the margin covers state moving meanwhile.
        let request = request.gas_limit(gas * 6 / 5);
        let mut attempt = 1;
        loop {
            match self.provider.send_transaction(request.clone()).await {
                Ok(pending) => return Ok(*pending.tx_hash()),
                // The nonce just read was taken by another transaction of the account's: the
                // next fill reads the pending count again, past it.
                Err(e) if attempt < SEND_ATTEMPTS && nonce_taken(&e) => {
                    attempt += 1;
                    let pause = rand::random_range(1..=50);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(readable(e)),
            }
        }
    }

    /// Waits for transaction `hash`'s receipt; fails unless it succeeded.
    pub async fn wait(&self, hash: B256) -> anyhow::Result<TransactionReceipt> {
        let receipt = PendingTransactionBuilder::new(self.provider.root().clone(), hash)
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| match e {
                PendingTransactionError::TransportError(e) => readable(e),
                PendingTransactionError::TxWatcher(WatchTxError::Timeout) => anyhow::anyhow!(
                    "transaction {hash} was not included within {RECEIPT_TIMEOUT:?}; it may \
                     still be (are blocks being sealed?): look it up by its hash before sending \
                     it again"
                ),
                other => anyhow::anyhow!("{other}"),
            })?;
        if !receipt.status() {
            let block = receipt.block_number.unwrap_or_default();
            bail!(
                "transaction {hash} reverted in block {block}{}",
                self.why_reverted(hash, receipt.gas_used).await
            );
        }
        Ok(receipt)
    }

    /// Why a transaction that passed its gas estimate reverted once included, as far as running
    /// it again on the newest state can say (what changed in between is what made it revert).
    async fn why_reverted(&self, hash: B256, gas_used: u64) -> String {
        let Ok(Some(tx)) = self.provider.get_transaction_by_hash(hash).await else {
            return String::new();
        };
        if gas_used >= tx.inner.gas_limit() {
            return format!(": it ran out of gas (limit {gas_used})");
        }
        let again = TransactionRequest::default()
            .from(tx.inner.signer())
            .to(tx.inner.to().unwrap_or_default())
            .value(tx.inner.value())
            .input(tx.inner.input().clone().into());
        match self.provider.call(again).latest().await {
            Ok(_) => {
                ": run again now, it would not revert (the state it ran on has changed)".into()
            }
            Err(e) => format!(": run again now, {}", readable(e)),
        }
    }

    /// The node's chain id.
    pub async fn chain_id(&self) -> anyhow::Result<u64> {
        self.provider.get_chain_id().await.map_err(readable)
    }

    /// The timestamp of the newest block.
    pub async fn latest_timestamp(&self) -> anyhow::Result<u64> {
        let latest = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(readable)?
            .context("the node has no latest block")?;
        Ok(latest.header.timestamp)
    }

    /// Moves the dev chain's clock `seconds` forward and seals a block that far after the
    /// latest one (blocks sealed one per transaction can run ahead of the wall clock).
    pub async fn advance_time(&self, seconds: u64) -> anyhow::Result<()> {
        let latest = self.latest_timestamp().await?;
        let refused = |e: ClientError| match e {
            ClientError::Call(e) => anyhow::anyhow!("{}", e.message()),
            other => anyhow::anyhow!("{other}"),
        };
        self.increase_time(Quantity(seconds))
            .await
            .map_err(refused)?;
        self.evm_mine(Some(Quantity(latest.saturating_add(seconds))))
            .await
            .map_err(refused)?;
        Ok(())
    }

    /// An account's OPEN balance.
    pub async fn balance(&self, account: Address) -> anyhow::Result<U256> {
        self.provider
            .get_balance(account)
            .latest()
            .await
            .map_err(readable)
    }

    /// The number of the newest block.
    pub async fn block_number(&self) -> anyhow::Result<u64> {
        self.provider.get_block_number().await.map_err(readable)
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
            let filter = Filter::new()
                .address(address)
                .event_signature(topics.to_vec())
                .from_block(start)
                .to_block(end);
            out.extend(self.provider.get_logs(&filter).await.map_err(readable)?);
            start = end + 1;
        }
        Ok(out)
    }

    async fn raw(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Box<RawValue>, ClientError> {
        let params = match params {
            Some(params) => params,
            None => RawValue::from_string("[]".into())?,
        };
        self.provider
            .raw_request_dyn(Cow::Owned(method.to_string()), &params)
            .await
            .map_err(|e| match e {
                RpcError::ErrorResp(payload) => ClientError::Call(ErrorObject::owned(
                    payload.code as i32,
                    payload.message.into_owned(),
                    payload.data,
                )),
                other => ClientError::Transport(other.into()),
            })
    }
}

/// The node's own namespaces, declared once as jsonrpsee traits in `openledger-rpc` (the dev
/// methods' [`DevApiClient`]), are called over this client's connection through this adapter:
/// one connection, HTTP or in-process, for alloy's `eth_*` and the node's own methods alike.
impl ClientT for Client {
    async fn notification<Params: ToRpcParams + Send>(
        &self,
        method: &str,
        params: Params,
    ) -> Result<(), ClientError> {
        self.raw(method, params.to_rpc_params()?).await.map(drop)
    }

    async fn request<R: DeserializeOwned, Params: ToRpcParams + Send>(
        &self,
        method: &str,
        params: Params,
    ) -> Result<R, ClientError> {
        let answer = self.raw(method, params.to_rpc_params()?).await?;
        Ok(serde_json::from_str(answer.get())?)
    }

    /// Sends the requests one after another (the node's own methods are not batched).
    async fn batch_request<'a, R: DeserializeOwned + std::fmt::Debug + 'a>(
        &self,
        batch: BatchRequestBuilder<'a>,
    ) -> Result<BatchResponse<'a, R>, ClientError> {
        let mut raw = Vec::new();
        for (method, params) in batch.build()? {
            raw.push(match self.raw(method, params).await {
                Ok(answer) => Ok(answer),
                Err(ClientError::Call(e)) => Err(e),
                Err(other) => return Err(other),
            });
        }
        // The answers are decoded after the last await: `R` need not be `Send`.
        let mut answers = Vec::with_capacity(raw.len());
        for answer in raw {
            answers.push(match answer {
                Ok(answer) => Ok(serde_json::from_str(answer.get())?),
                Err(e) => Err(e),
            });
        }
        let succeeded = answers.iter().filter(|a| a.is_ok()).count();
        let failed = answers.len() - succeeded;
        Ok(BatchResponse::new(succeeded, answers, failed))
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

/// The last event of type `E` in the receipt's logs; an error names the event a transaction
/// that succeeded should have emitted and did not.
pub fn event<E: SolEvent>(receipt: &TransactionReceipt) -> anyhow::Result<E> {
    events(receipt).pop().ok_or_else(|| {
        anyhow::anyhow!(
            "transaction {} emitted no {} event",
            receipt.transaction_hash,
            E::SIGNATURE
        )
    })
}

/// A readable error for a failed request: the node's message, with a revert decoded by the
/// modules' ABIs; a node that cannot be reached is named as such.
fn readable(e: TransportError) -> anyhow::Error {
    match e {
        RpcError::ErrorResp(payload) => match payload.as_revert_data() {
            Some(data) if !data.is_empty() => {
                anyhow::anyhow!("{}: {}", payload.message, describe_revert(&data))
            }
            _ => anyhow::anyhow!("{}", payload.message),
        },
        RpcError::Transport(TransportErrorKind::HttpError(http)) => anyhow::anyhow!(
            "the node answered HTTP {} instead of JSON-RPC: {NOT_RPC}",
            http.status
        ),
        RpcError::Transport(TransportErrorKind::Custom(reason)) => {
            let timed_out = reason
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout);
            if timed_out {
                anyhow::anyhow!("the node did not answer in time ({reason}); is it overloaded?")
            } else {
                anyhow::anyhow!("cannot reach the node: {reason}; is `openledger dev` running?")
            }
        }
        RpcError::DeserError { err, .. } => {
            anyhow::anyhow!("the node's answer is not JSON-RPC ({err}): {NOT_RPC}")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

/// What a URL that answers something other than JSON-RPC probably is.
const NOT_RPC: &str = "is --rpc-url the node's JSON-RPC endpoint (`openledger dev` prints it; \
                       the content API's port is another)?";

/// Whether the pool refused a transaction because another of its sender's holds its nonce.
fn nonce_taken(e: &TransportError) -> bool {
    e.as_error_resp().is_some_and(|payload| {
        [
            "already known",
            "replacement transaction underpriced",
            "nonce too low",
        ]
        .iter()
        .any(|m| payload.message.starts_with(m))
    })
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

#[cfg(test)]
mod tests {
    use openledger_primitives::addresses;
    use openledger_protocol::abi::ISettlement;

    use super::*;
    use crate::testing::TestChain;

    /// Six commands sending for one account at once (each its own client, as separate CLI
    /// processes are) all land, though they read the same pending nonce.
    #[tokio::test]
    async fn sends_for_one_account_at_once_all_land() {
        let chain = TestChain::over_http(2).await;
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let client = chain.account(1);
            sends.spawn(async move {
                let deposit = ISettlement::depositCall {};
                client
                    .send(addresses::SETTLEMENT, &deposit, U256::from(1))
                    .await
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent.expect("joined").expect("landed");
        }
        let account = chain.account(1).sender().unwrap();
        let escrow = chain
            .account(1)
            .view(
                addresses::SETTLEMENT,
                &ISettlement::balanceOfCall { account },
            )
            .await
            .unwrap();
        assert_eq!(escrow, U256::from(6));
    }

    /// A URL that is not a node's JSON-RPC gets an error that says so, not a hang or a
    /// transport's internals.
    #[tokio::test]
    async fn a_url_that_is_not_the_nodes_json_rpc_says_so() {
        let err = Client::new("ws://127.0.0.1:8545", None).err().unwrap();
        assert!(err.to_string().contains("http:// or https://"), "{err}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        let client = Client::new(&format!("http://{addr}"), None).unwrap();
        let err = client.block_number().await.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 404") && err.contains("--rpc-url"),
            "{err}"
        );
        server.abort();
    }
}

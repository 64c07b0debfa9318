//! The dev methods over a real JSON-RPC server: served only when the node is a dev chain, and
//! an impersonated account's unsigned transaction mined, listed and traced as its own.

use std::sync::Arc;

use alloy_primitives::{Address, B256, U64, U256};
use alloy_signer_local::PrivateKeySigner;
use jsonrpsee::{
    core::{
        ClientError,
        client::ClientT,
        params::{ArrayParams, ObjectParams},
    },
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
};
use openledger_chain::{Chain, ChainConfig, Store, mempool::PoolLimits};
use openledger_primitives::Genesis;
use openledger_rpc::{
    DevRpc, RpcConfig, RpcServer,
    dev::{ARITY, DevApiClient},
    params::Quantity,
};
use serde_json::{Value, json};

async fn serve(dev: Option<DevRpc>) -> (Arc<Chain>, RpcServer, HttpClient) {
    let genesis = Genesis::dev(1337, &[]);
    let config = ChainConfig {
        genesis,
        modules: Default::default(),
        pool: PoolLimits::default(),
    };
    let chain = Arc::new(Chain::open(Store::in_memory().unwrap(), config).unwrap());
    let rpc = RpcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        dev,
        ..RpcConfig::default()
    };
    let server = openledger_rpc::start(chain.clone(), rpc).await.unwrap();
    let client = HttpClientBuilder::default()
        .build(format!("http://{}", server.local_addr))
        .unwrap();
    (chain, server, client)
}

fn code(err: ClientError) -> i32 {
    match err {
        ClientError::Call(e) => e.code(),
        other => panic!("not an error answer: {other}"),
    }
}

#[tokio::test]
async fn dev_methods_answer_only_on_a_dev_chain() {
    let (_, server, client) = serve(None).await;
    for method in ["evm_snapshot", "hardhat_getAutomine", "evm_mine"] {
        let err = client
            .request::<Value, _>(method, rpc_params![])
            .await
            .unwrap_err();
        assert_eq!(code(err), -32601, "{method}");
    }
    let accounts: Vec<Address> = client.request("eth_accounts", rpc_params![]).await.unwrap();
    assert!(accounts.is_empty());
    server.stop().await;

    let signer = PrivateKeySigner::random();
    let (_, server, client) = serve(Some(DevRpc {
        signers: vec![signer.clone()],
    }))
    .await;
    let id: String = client.request("evm_snapshot", rpc_params![]).await.unwrap();
    assert_eq!(id, "0x1");
    let accounts: Vec<Address> = client.request("eth_accounts", rpc_params![]).await.unwrap();
    assert_eq!(accounts, [signer.address()]);
    server.stop().await;
}

#[tokio::test]
async fn an_impersonated_account_sends_unsigned_and_owns_what_it_sent() {
    let (chain, server, client) = serve(Some(DevRpc::default())).await;
    let whale = Address::repeat_byte(0xaa);
    let to = Address::repeat_byte(0xbb);
    let ether = U256::from(10).pow(U256::from(18));
    let _: Value = client
        .request("anvil_setBalance", rpc_params![whale, ether])
        .await
        .unwrap();
    let send = json!({ "from": whale, "to": to, "value": "0x3e8" });
    let refused = client
        .request::<B256, _>("eth_sendTransaction", rpc_params![send.clone()])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unknown account"), "{refused}");

    let _: Value = client
        .request("anvil_impersonateAccount", rpc_params![whale])
        .await
        .unwrap();
    let hash: B256 = client
        .request("eth_sendTransaction", rpc_params![send.clone()])
        .await
        .unwrap();
    let block = chain.produce_block(chain.now()).unwrap();
    assert_eq!(block.transactions[0].0, hash);
    let tx: Value = client
        .request("eth_getTransactionByHash", rpc_params![hash])
        .await
        .unwrap();
    assert_eq!(tx["from"], json!(whale));
    let receipt: Value = client
        .request("eth_getTransactionReceipt", rpc_params![hash])
        .await
        .unwrap();
    assert_eq!(
        (receipt["from"].clone(), receipt["status"].clone()),
        (json!(whale), json!("0x1"))
    );
    let balance: U256 = client
        .request("eth_getBalance", rpc_params![to])
        .await
        .unwrap();
    assert_eq!(balance, U256::from(1000));
    let trace: Value = client
        .request(
            "debug_traceTransaction",
            rpc_params![hash, json!({ "tracer": "callTracer" })],
        )
        .await
        .unwrap();
    assert_eq!(trace["from"], json!(whale));

    let _: Value = client
        .request("anvil_stopImpersonatingAccount", rpc_params![whale])
        .await
        .unwrap();
    let refused = client
        .request::<B256, _>("eth_sendTransaction", rpc_params![send])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unknown account"), "{refused}");
    server.stop().await;
}

fn message(err: ClientError) -> String {
    match err {
        ClientError::Call(e) => e.message().to_string(),
        other => panic!("not an error answer: {other}"),
    }
}

/// The dev namespace is one declaration: every method the server answers is listed with how
/// many parameters it takes, a request with more (or with named parameters) is refused as geth
/// refuses it, and the client generated from the same trait calls the methods.
#[tokio::test]
async fn dev_methods_take_what_they_declare_and_the_generated_client_calls_them() {
    let (chain, server, client) = serve(Some(DevRpc::default())).await;
    let mut served: Vec<&str> = server
        .methods
        .method_names()
        .filter(|m| {
            ["evm_", "anvil_", "hardhat_"]
                .iter()
                .any(|p| m.starts_with(p))
        })
        .collect();
    let mut listed: Vec<&str> = ARITY.iter().map(|(name, _)| *name).collect();
    served.sort_unstable();
    listed.sort_unstable();
    assert_eq!(served, listed);

    for (method, max) in ARITY {
        let mut params = ArrayParams::new();
        for _ in 0..=*max {
            params.insert(Value::Null).unwrap();
        }
        let err = client
            .request::<Value, _>(method, params)
            .await
            .unwrap_err();
        assert_eq!(
            message(err),
            format!("too many arguments, want at most {max}"),
            "{method}"
        );
    }
    let mut named = ObjectParams::new();
    named.insert("timestamp", "0x1").unwrap();
    let err = client
        .request::<Value, _>("evm_mine", named)
        .await
        .unwrap_err();
    assert_eq!(message(err), "non-array args");

    let head = chain.head().header.number;
    client.mine(Some(Quantity(3)), None).await.unwrap();
    assert_eq!(chain.head().header.number, head + 3);
    assert_eq!(client.snapshot().await.unwrap(), U64::from(1));
    for on in [true, false] {
        assert!(client.set_automine(on).await.unwrap());
        assert_eq!(client.automine().await.unwrap(), on);
    }
    server.stop().await;
}

// What a viem user does against `openledger dev`: every transaction type, contracts, events,
// reverts, estimates, history, WebSocket watchers and refused transactions.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  decodeEventLog,
  http,
  parseGwei,
  webSocket,
} from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { artifacts, devChain, startNode } from "./node.mjs";

const KEYS = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];
const TREASURY = "0x4f4c000000000000000000000000000000000008";

let node, chain, client, wallets;

before(async () => {
  node = await startNode();
  chain = devChain(node);
  client = createPublicClient({ chain, transport: http(node.url) });
  wallets = KEYS.map((key) => createWalletClient({ account: privateKeyToAccount(key), chain, transport: http(node.url) }));
});

after(async () => {
  await node?.stop();
});

async function deploy(name, args = [], wallet = wallets[0]) {
  const { abi, bytecode } = artifacts[name];
  const hash = await wallet.deployContract({ abi, bytecode, args });
  const receipt = await client.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success");
  return { address: receipt.contractAddress, abi, receipt };
}

test("chain id and OPEN balances", async () => {
  assert.equal(await client.getChainId(), node.chainId);
  const balance = await client.getBalance({ address: wallets[0].account.address, blockNumber: 0n });
  assert.equal(balance, 10_000_000n * 10n ** 18n);
});

for (const type of ["legacy", "eip2930", "eip1559"]) {
  test(`${type} transfer`, async () => {
    const to = privateKeyToAccount(generatePrivateKey()).address;
    const wallet = wallets[1];
    const before = await client.getBalance({ address: wallet.account.address });
    const extra = type === "eip2930" ? { accessList: [{ address: to, storageKeys: [] }] } : {};
    const hash = await wallet.sendTransaction({ to, value: 777n, type, ...extra });
    const receipt = await client.waitForTransactionReceipt({ hash });
    assert.equal(receipt.status, "success");
    assert.equal(receipt.type, type);
    assert.equal(await client.getBalance({ address: to }), 777n);
    const after = await client.getBalance({ address: wallet.account.address });
    assert.equal(before - after, 777n + receipt.gasUsed * receipt.effectiveGasPrice);
  });
}

test("base fee accrues to the treasury", async () => {
  const hash = await wallets[2].sendTransaction({ to: TREASURY, value: 0n });
  const receipt = await client.waitForTransactionReceipt({ hash });
  const block = await client.getBlock({ blockNumber: receipt.blockNumber });
  const gained =
    (await client.getBalance({ address: TREASURY, blockNumber: receipt.blockNumber })) -
    (await client.getBalance({ address: TREASURY, blockNumber: receipt.blockNumber - 1n }));
  assert.equal(gained, block.baseFeePerGas * receipt.gasUsed);
});

test("EIP-7702 authorization delegates an account to a contract", async () => {
  const counter = await deploy("Counter");
  const eoa = privateKeyToAccount(KEYS[2]);
  const wallet = wallets[2];
  const authorization = await wallet.signAuthorization({ contractAddress: counter.address, executor: "self" });
  const hash = await wallet.writeContract({
    abi: counter.abi,
    address: eoa.address,
    functionName: "increment",
    authorizationList: [authorization],
  });
  const receipt = await client.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success");
  assert.equal(receipt.type, "eip7702");
  const code = await client.getCode({ address: eoa.address });
  assert.equal(code.toLowerCase(), ("0xef0100" + counter.address.slice(2)).toLowerCase());
  assert.equal(await client.readContract({ abi: counter.abi, address: eoa.address, functionName: "count" }), 1n);
});

test("deploy, write, read, events and historical reads", async () => {
  const counter = await deploy("Counter");
  const write = (value) =>
    wallets[0].writeContract({ abi: counter.abi, address: counter.address, functionName: "add", args: [value] });
  const first = await client.waitForTransactionReceipt({ hash: await write(3n) });
  const second = await client.waitForTransactionReceipt({ hash: await write(4n) });
  const read = (blockNumber) =>
    client.readContract({ abi: counter.abi, address: counter.address, functionName: "count", blockNumber });
  assert.equal(await read(), 7n);
  assert.equal(await read(first.blockNumber), 3n);
  assert.equal(await client.getCode({ address: counter.address, blockNumber: counter.receipt.blockNumber - 1n }), undefined);
  const events = await client.getContractEvents({
    abi: counter.abi,
    address: counter.address,
    eventName: "Incremented",
    fromBlock: counter.receipt.blockNumber,
  });
  assert.deepEqual(events.map((e) => e.args.newCount), [3n, 7n]);
  const decoded = decodeEventLog({ abi: counter.abi, ...second.logs[0] });
  assert.equal(decoded.args.by, wallets[0].account.address);
});

test("reverts surface the reason and custom errors", async () => {
  const counter = await deploy("Counter");
  await assert.rejects(
    client.simulateContract({ abi: counter.abi, address: counter.address, functionName: "add", args: [5000n], account: wallets[0].account }),
    (err) => {
      const revert = err instanceof BaseError && err.walk((e) => e instanceof ContractFunctionRevertedError);
      assert.ok(revert, String(err));
      assert.equal(revert.reason, "value too large");
      return true;
    },
  );
  await assert.rejects(
    client.readContract({ abi: counter.abi, address: counter.address, functionName: "addChecked", args: [5000n] }),
    (err) => {
      const revert = err.walk((e) => e instanceof ContractFunctionRevertedError);
      assert.equal(revert.data.errorName, "TooLarge");
      assert.deepEqual(revert.data.args, [5000n, 1000n]);
      return true;
    },
  );
});

test("estimateGas is exact for transfers and sufficient for calls", async () => {
  const to = privateKeyToAccount(generatePrivateKey()).address;
  assert.equal(await client.estimateGas({ account: wallets[0].account, to, value: 1n }), 21000n);
  const counter = await deploy("Counter");
  const gas = await client.estimateContractGas({
    abi: counter.abi, address: counter.address, functionName: "increment", account: wallets[0].account,
  });
  const hash = await wallets[0].writeContract({ abi: counter.abi, address: counter.address, functionName: "increment", gas });
  assert.equal((await client.waitForTransactionReceipt({ hash })).status, "success");
});

test("ERC-20 transfers and balances", async () => {
  const token = await deploy("Token", [10n ** 24n]);
  const to = privateKeyToAccount(generatePrivateKey()).address;
  const hash = await wallets[0].writeContract({ abi: token.abi, address: token.address, functionName: "transfer", args: [to, 5n] });
  await client.waitForTransactionReceipt({ hash });
  assert.equal(await client.readContract({ abi: token.abi, address: token.address, functionName: "balanceOf", args: [to] }), 5n);
});

test("WebSocket watchers see new blocks and contract events", async () => {
  const ws = createPublicClient({ chain, transport: webSocket(node.wsUrl) });
  const counter = await deploy("Counter");
  const seen = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("no event within 30s")), 30_000);
    const blocks = [];
    const unwatchBlocks = ws.watchBlockNumber({ onBlockNumber: (n) => blocks.push(n), emitOnBegin: false });
    const unwatch = ws.watchContractEvent({
      abi: counter.abi,
      address: counter.address,
      eventName: "Incremented",
      onLogs: (logs) => {
        clearTimeout(timer);
        unwatch();
        unwatchBlocks();
        ok({ logs, blocks });
      },
    });
  });
  await new Promise((ok) => setTimeout(ok, 200));
  const hash = await wallets[0].writeContract({ abi: counter.abi, address: counter.address, functionName: "increment" });
  const receipt = await client.waitForTransactionReceipt({ hash });
  const { logs } = await seen;
  assert.equal(logs[0].transactionHash, hash);
  assert.equal(logs[0].blockNumber, receipt.blockNumber);
  await ws.transport.getRpcClient().then((c) => c.close());
});

test("bad transactions are refused and change nothing", async () => {
  const account = wallets[1].account;
  const nonce = await client.getTransactionCount({ address: account.address, blockTag: "pending" });
  const base = { to: account.address, value: 1n, gas: 21000n, maxFeePerGas: parseGwei("100"), maxPriorityFeePerGas: 1n, chainId: node.chainId, type: "eip1559" };
  const send = async (tx) => client.sendRawTransaction({ serializedTransaction: await account.signTransaction(tx) });
  await assert.rejects(send({ ...base, nonce: 0 }), /nonce too low/);
  await assert.rejects(send({ ...base, nonce, value: 10n ** 40n }), /insufficient funds/);
  await assert.rejects(send({ ...base, nonce, chainId: 1 }), /invalid chain id/);
  await assert.rejects(client.sendRawTransaction({ serializedTransaction: "0x02deadbeef" }), /failed to decode/);
  assert.equal(await client.getTransactionCount({ address: account.address, blockTag: "pending" }), nonce);
});

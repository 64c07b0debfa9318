// viem's test client (mode "anvil") against `openledger dev`: the state edits, mining and clock
// moves, snapshots, impersonation and automine switches that Foundry and Hardhat users set their
// tests up with, and geth's tracers on what they sent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  createPublicClient,
  createTestClient,
  createWalletClient,
  http,
  pad,
  parseEther,
  toHex,
} from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { devChain, startNode } from "./node.mjs";

let node, chain, client, testClient;

before(async () => {
  node = await startNode();
  chain = devChain(node);
  client = createPublicClient({ chain, transport: http(node.url) });
  testClient = createTestClient({ chain, mode: "anvil", transport: http(node.url) });
});

after(async () => {
  await node?.stop();
});

test("state edits take effect at once", async () => {
  const address = privateKeyToAccount(generatePrivateKey()).address;
  await testClient.setBalance({ address, value: 7n * 10n ** 18n });
  assert.equal(await client.getBalance({ address }), 7n * 10n ** 18n);
  await testClient.setNonce({ address, nonce: 5 });
  assert.equal(await client.getTransactionCount({ address }), 5);
  // PUSH1 42, PUSH1 0, MSTORE, PUSH1 32, PUSH1 0, RETURN: returns 42 to any call.
  const code = "0x602a60005260206000f3";
  await testClient.setCode({ address, bytecode: code });
  assert.equal(await client.getCode({ address }), code);
  assert.equal(BigInt((await client.call({ to: address })).data), 42n);
  await testClient.setStorageAt({ address, index: 1, value: pad(toHex(9)) });
  assert.equal(BigInt(await client.getStorageAt({ address, slot: toHex(1) })), 9n);
});

test("mining blocks at an interval and moving the clock", async () => {
  const before = await client.getBlock();
  await testClient.mine({ blocks: 3, interval: 10 });
  const mined = await client.getBlock();
  assert.equal(mined.number, before.number + 3n);
  assert.equal(mined.timestamp, before.timestamp + 30n);
  const next = mined.timestamp + 3600n;
  await testClient.setNextBlockTimestamp({ timestamp: next });
  await testClient.mine({ blocks: 1 });
  assert.equal((await client.getBlock()).timestamp, next);
  await testClient.increaseTime({ seconds: 60 });
  await testClient.mine({ blocks: 1 });
  assert.ok((await client.getBlock()).timestamp >= next + 60n);
});

test("a revert drops what was mined since the snapshot", async () => {
  const address = privateKeyToAccount(generatePrivateKey()).address;
  const id = await testClient.snapshot();
  const head = await client.getBlockNumber({ cacheTime: 0 });
  await testClient.setBalance({ address, value: 5n });
  await testClient.mine({ blocks: 2 });
  assert.equal(await client.getBalance({ address }), 5n);
  await testClient.revert({ id });
  assert.equal(await client.getBlockNumber({ cacheTime: 0 }), head);
  assert.equal(await client.getBalance({ address }), 0n);
});

test("an impersonated account sends and is traced as the sender", async () => {
  const [dev] = await client.request({ method: "eth_accounts" });
  const whale = privateKeyToAccount(generatePrivateKey()).address;
  await testClient.setBalance({ address: whale, value: parseEther("2") });
  await testClient.impersonateAccount({ address: whale });
  const wallet = createWalletClient({ chain, transport: http(node.url) });
  const hash = await wallet.sendTransaction({ account: whale, to: dev, value: parseEther("1") });
  const receipt = await client.waitForTransactionReceipt({ hash });
  assert.equal(receipt.from, whale.toLowerCase());
  const trace = await client.request({
    method: "debug_traceTransaction",
    params: [hash, { tracer: "callTracer" }],
  });
  assert.equal(trace.from, whale.toLowerCase());
  assert.equal(BigInt(trace.value), parseEther("1"));
  await testClient.stopImpersonatingAccount({ address: whale });
  await assert.rejects(
    wallet.sendTransaction({ account: whale, to: dev, value: 1n, gas: 21000n }),
    /unknown account/,
  );
});

test("with automine off a transaction waits for mine", async () => {
  const [dev] = await client.request({ method: "eth_accounts" });
  const wallet = createWalletClient({ chain, transport: http(node.url) });
  await testClient.setAutomine(false);
  try {
    const head = await client.getBlockNumber({ cacheTime: 0 });
    const hash = await wallet.sendTransaction({ account: dev, to: dev, value: 1n });
    assert.equal(await client.getBlockNumber({ cacheTime: 0 }), head);
    await testClient.mine({ blocks: 1 });
    const receipt = await client.getTransactionReceipt({ hash });
    assert.equal(receipt.blockNumber, head + 1n);
  } finally {
    await testClient.setAutomine(true);
  }
});

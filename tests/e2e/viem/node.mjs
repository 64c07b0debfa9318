// Starts a fresh `openledger dev` on a free port with its own data directory, for the tests.
import { spawn } from "node:child_process";
import { defineChain } from "viem";
import { mkdtempSync, rmSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const binary = process.env.OPENLEDGER_BIN ?? join(root, "target/debug/openledger");
export const artifacts = JSON.parse(
  readFileSync(process.env.OPENLEDGER_CONTRACTS ?? join(root, "target/e2e/contracts.json"), "utf8"),
);

async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
    server.on("error", fail);
  });
}

// The dev node as a viem chain: the same definition for every test file.
export function devChain(node) {
  return defineChain({
    id: node.chainId,
    name: "OpenLedger dev",
    nativeCurrency: { name: "OPEN", symbol: "OPEN", decimals: 18 },
    rpcUrls: { default: { http: [node.url], webSocket: [node.wsUrl] } },
  });
}

export async function startNode() {
  const datadir = mkdtempSync(join(tmpdir(), "openledger-viem-"));
  const port = await freePort();
  const log = openSync(join(datadir, "node.log"), "w");
  const child = spawn(binary, ["dev", "--datadir", datadir, "--rpc-addr", `127.0.0.1:${port}`, "--api-addr", "127.0.0.1:0", "--block-time", "0"], {
    stdio: ["ignore", log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      });
      const { result } = await res.json();
      const stop = async () => {
        child.kill("SIGTERM");
        await new Promise((ok) => (child.exitCode !== null ? ok() : child.once("exit", ok)));
        rmSync(datadir, { recursive: true, force: true });
      };
      return { url, wsUrl: `ws://127.0.0.1:${port}`, chainId: Number(result), stop };
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`node did not start:\n${readFileSync(join(datadir, "node.log"), "utf8")}`);
      }
      await new Promise((ok) => setTimeout(ok, 100));
    }
  }
}

// Compiles contracts/*.sol with solc-js and writes their ABIs and bytecode to the file named by
// the first argument (JSON: { Name: { abi, bytecode } }), for the Python and JavaScript tests.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, "contracts");
const sources = Object.fromEntries(
  readdirSync(dir)
    .filter((f) => f.endsWith(".sol"))
    .map((f) => [f, { content: readFileSync(join(dir, f), "utf8") }]),
);
const input = {
  language: "Solidity",
  sources,
  settings: { evmVersion: "prague", optimizer: { enabled: true, runs: 200 }, outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
if (errors.length > 0) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const artifacts = {};
for (const file of Object.values(output.contracts)) {
  for (const [name, contract] of Object.entries(file)) {
    artifacts[name] = { abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object };
  }
}
writeFileSync(process.argv[2], JSON.stringify(artifacts, null, 2));
console.log(`compiled ${Object.keys(artifacts).join(", ")} -> ${process.argv[2]}`);

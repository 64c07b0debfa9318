//! The ModelFactory loop a user runs: generate a corpus, pre-train a base model on one domain,
//! fine-tune a LoRA adapter on another, and check what the files on disk say.

use std::{ops::ControlFlow, path::Path};

use openledger_ml::factory::{DataOptions, FineTune, Pretrain, read_metrics};
use openledger_ml::synth::{SynthOptions, generate};
use openledger_ml::train::{TrainOptions, unwatched};
use openledger_ml::{Adapter, LoraConfig, MlError, ModelConfig, checkpoint};

fn synth(domain: &str, dir: &Path, seed: u64) -> Vec<std::path::PathBuf> {
    let options = SynthOptions {
        domain: domain.into(),
        contributors: 4,
        rows: 60,
        seed,
        noise_contributor: None,
    };
    let manifest = generate(&options, dir).unwrap();
    manifest
        .contributors
        .iter()
        .map(|c| dir.join(&c.file))
        .collect()
}

#[test]
fn lora_fine_tuning_lowers_held_out_loss_well_below_the_base_model() {
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = tmp.path().join("base");
    let pretrain = Pretrain {
        config: ModelConfig::llama(0, 64, 2, 4, 2),
        vocab_size: 512,
        data: DataOptions {
            files: synth("finance", &tmp.path().join("finance"), 1),
            eval_split: 0.1,
            context: 64,
        },
        out: base_dir.clone(),
        train: TrainOptions {
            lr: 3e-3,
            batch_size: 16,
            epochs: 4,
            seed: 1,
            ..Default::default()
        },
    };
    let started = std::time::Instant::now();
    let base = pretrain.run(&mut unwatched).unwrap();
    eprintln!("pretrain: {:?} in {:?}", base.eval_after, started.elapsed());
    assert!(base.eval_after.unwrap().loss < base.eval_before.unwrap().loss);

    let out = tmp.path().join("adapter");
    let job = FineTune {
        base: base_dir.clone(),
        data: DataOptions {
            files: synth("medical", &tmp.path().join("medical"), 2),
            eval_split: 0.1,
            context: 64,
        },
        out: out.clone(),
        lora: LoraConfig::new(8, 16.0, "q,k,v,o,gate,up,down").unwrap(),
        train: TrainOptions {
            lr: 1e-2,
            batch_size: 8,
            epochs: 6,
            seed: 2,
            ..Default::default()
        },
        qlora: false,
    };
    let started = std::time::Instant::now();
    let mut steps = 0;
    let metrics = job
        .run(&mut |p| {
            steps = p.step;
            ControlFlow::Continue(())
        })
        .unwrap();
    eprintln!(
        "lora: {:?} -> {:?} in {:?}",
        metrics.eval_before,
        metrics.eval_after,
        started.elapsed()
    );
    let (before, after) = (
        metrics.eval_before.unwrap().loss,
        metrics.eval_after.unwrap().loss,
    );
    // At least one nat lower: held-out perplexity falls by more than a factor e.
    assert!(after < before - 1.0, "held-out loss {before} -> {after}");
    assert_eq!(steps, metrics.run.steps);
    let on_disk = read_metrics(&out).unwrap();
    assert_eq!(
        (on_disk.run.steps, on_disk.train_rows, on_disk.eval_rows),
        (steps, 216, 24)
    );
    assert!(
        std::fs::read_to_string(out.join("loss_curve.svg"))
            .unwrap()
            .contains("<polyline")
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("rows.json")).unwrap()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 240);
    assert!(
        rows[0]["id"]
            .as_str()
            .unwrap()
            .starts_with(rows[0]["contributor"].as_str().unwrap())
    );

    let model = checkpoint::load_model(&base_dir, &candle_core::Device::Cpu).unwrap();
    let adapter = Adapter::load(&out, model.config(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(adapter.config().rank, 8);

    // Stopped between steps (a cancelled job), the run fails and saves no adapter.
    let stopped = FineTune {
        out: tmp.path().join("stopped"),
        ..job
    };
    let err = stopped
        .run(&mut |p| match p.step {
            2 => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .unwrap_err();
    assert!(matches!(err, MlError::Stopped { step: 2 }), "{err}");
    assert!(
        !tmp.path()
            .join("stopped")
            .join("adapter_model.safetensors")
            .exists()
    );
}

#[test]
fn training_is_deterministic_under_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let files = synth("legal", &tmp.path().join("legal"), 3);
    let data = DataOptions {
        files,
        eval_split: 0.1,
        context: 32,
    };
    let train = TrainOptions {
        lr: 1e-2,
        batch_size: 8,
        max_steps: Some(4),
        seed: 5,
        ..Default::default()
    };
    let bytes = |dir: &Path, file: &str| std::fs::read(dir.join(file)).unwrap();
    let pretrain = |out: &Path| {
        Pretrain {
            config: ModelConfig::llama(0, 32, 1, 4, 2),
            vocab_size: 300,
            data: data.clone(),
            out: out.into(),
            train: train.clone(),
        }
        .run(&mut unwatched)
        .unwrap()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    pretrain(&a);
    pretrain(&b);
    assert_eq!(
        bytes(&a, "model.safetensors"),
        bytes(&b, "model.safetensors")
    );
    assert_eq!(bytes(&a, "tokenizer.json"), bytes(&b, "tokenizer.json"));

    let finetune = |out: &Path| {
        FineTune {
            base: a.clone(),
            data: data.clone(),
            out: out.into(),
            lora: LoraConfig::new(4, 8.0, "q,v").unwrap(),
            train: train.clone(),
            qlora: false,
        }
        .run(&mut unwatched)
        .unwrap()
    };
    let (x, y) = (tmp.path().join("x"), tmp.path().join("y"));
    finetune(&x);
    finetune(&y);
    assert_eq!(
        bytes(&x, "adapter_model.safetensors"),
        bytes(&y, "adapter_model.safetensors")
    );
    assert_eq!(bytes(&x, "rows.json"), bytes(&y, "rows.json"));
}

"""The peer of the `smollm2_step` benchmark: one LoRA training step of Hugging Face PEFT on
PyTorch's CPU backend, over transformers' own reading of the same GGUF file (dequantized to f32).

Reads the work as JSON from the file named by its argument (`gguf`, `batch`, `seq`, `rank`,
`alpha`, `targets`, `threads`, `steps`, `tokens`: the batch's token ids, row by row) and prints
`{"seconds": [...], "peak_bytes": N}`: each timed step's seconds (forward, cross-entropy over
every next token, backward, AdamW), after one untimed warm-up step, and the process's peak
resident memory.
"""

import json
import resource
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    work = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(work["threads"])
    gguf = Path(work["gguf"])
    base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    config = LoraConfig(r=work["rank"], lora_alpha=work["alpha"], lora_dropout=0.0,
                        target_modules=work["targets"], task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens = torch.tensor(work["tokens"])

    def step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    seconds = []
    for _ in range(work["steps"]):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


if __name__ == "__main__":
    main()

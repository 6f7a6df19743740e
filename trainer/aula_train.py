"""Aula's trainer: a LoRA fine-tune of the weights Aula serves, written back
as a GGUF LoRA adapter that `aula engine --lora` (llama.cpp) applies.

    python aula_train.py JOB.json

JOB.json: {"base_gguf": PATH | "base_hf": DIR, "training_file": PATH (JSONL of {"messages": [...]}),
           "out_dir": DIR, "n_epochs": 3, "batch_size": 4, "learning_rate": 2e-4,
           "lora_rank": 8, "lora_alpha": 16, "seed": 42, "checkpoint_every": 10,
           "device": "cpu" | "cuda", "precision": "f32" | "bf16", "qlora": false,
           "gradient_checkpointing": false, "memory_limit_bytes": N}

Where it trains is the gateway's choice (crates/aula-gateway/src/finetune/
device.rs); `placement` checks it against what PyTorch sees and refuses with
the reason when it does not hold (no CUDA device, no bf16, no bitsandbytes).

What it does, in order:
- loads the base GGUF with transformers (`gguf_file=`: the weights are
  dequantised, llama's q/k rows un-permuted), then rebuilds the model from its
  config around the same tensors (one copy) so that nothing marks it
  quantised;
- renders each conversation with the base model's own chat template and
  masks the loss to the assistant turns;
- on the CPU: f32 weights; on a CUDA GPU: bf16 (or f32) weights moved to the
  GPU, or for QLoRA the bf16 weights written once to a Hugging Face directory
  and loaded back in 4-bit NF4 through bitsandbytes; gradient checkpointing
  where the job asks;
- trains LoRA adapters (PEFT) on the attention projections;
- reports its measured peak memory after the first step and at the end
  ({"type": "memory", "device", "peak_bytes"}): the gateway records it and
  holds that much of the memory budget from then on;
- checkpoints every `checkpoint_every` steps (and resumes from the last one);
- writes `adapter.gguf`: `general.type=adapter`, `adapter.type=lora`,
  `adapter.lora.alpha`, tensors `blk.N.<name>.weight.lora_a/.lora_b`, with
  llama.cpp's q/k row permutation applied to lora_b.

With `base_hf` (a model vLLM serves from a Hugging Face directory) it
trains on that directory's weights (QLoRA quantises them while loading) and
writes PEFT's adapter directory `adapter/` (adapter_config.json,
adapter_model.safetensors), which vLLM loads.

Progress goes to stdout as JSON lines ({"type": "metrics", ...}, "checkpoint",
"done", "error"): the gateway turns them into the job's events.
"""

import json
import math
import os
import pathlib
import random
import sys
import time


def emit(kind, **fields):
    print(json.dumps({"type": kind, **fields}), flush=True)


def fail(message):
    emit("error", message=message)
    sys.exit(1)


# HF projection -> llama.cpp tensor name.
GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class Refused(Exception):
    """A job this trainer cannot run here; the message says why."""


def placement(job, torch, have_module):
    """(device, dtype, qlora, gradient_checkpointing) for `job`, checked
    against PyTorch: `torch` is the module (or a stand-in in the tests),
    `have_module(name)` whether a module can be imported."""
    device = job.get("device", "cpu")
    precision = job.get("precision", "f32")
    qlora = bool(job.get("qlora", False))
    if device not in ("cpu", "cuda"):
        raise Refused(f"unknown device {device!r}; the trainer runs on \"cpu\" or \"cuda\"")
    if precision not in ("f32", "bf16"):
        raise Refused(f"unknown precision {precision!r}; the trainer trains in \"f32\" or \"bf16\"")
    if device == "cpu":
        if qlora:
            raise Refused("QLoRA needs a CUDA GPU (bitsandbytes' 4-bit kernels); this job is on the CPU")
        if precision != "f32":
            raise Refused("the CPU trainer trains in f32")
    else:
        if not torch.cuda.is_available():
            raise Refused("the job was planned for the GPU, but PyTorch sees no CUDA device "
                          "(a CPU-only torch wheel, or no driver): install PyTorch for CUDA into the trainer's Python")
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise Refused(f"the job trains in bf16, which {torch.cuda.get_device_name(0)} does not compute")
        if qlora and precision != "bf16":
            raise Refused("QLoRA computes in bf16")
        if qlora and not have_module("bitsandbytes"):
            raise Refused("QLoRA needs bitsandbytes in the trainer's Python (pip install bitsandbytes)")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return device, dtype, qlora, bool(job.get("gradient_checkpointing", device == "cuda"))


def cuda_memory_fraction(limit_bytes, total_bytes):
    """The share of the GPU's memory PyTorch may take for this trainer
    (torch.cuda.set_per_process_memory_fraction), from the gateway's limit
    for the job; None without a limit."""
    if not limit_bytes or not total_bytes:
        return None
    return max(0.01, min(1.0, limit_bytes / total_bytes))


def peak_bytes(torch, device):
    """The trainer's peak so far: the CUDA caching allocator's peak on the
    GPU (what it took from the device), the process's peak resident set on
    the CPU."""
    if device == "cuda":
        return int(torch.cuda.max_memory_reserved())
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def llama_permute(w, n_head):
    """llama.cpp's row order for q/k (convert_hf_to_gguf's `permute`)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def load_examples(path, tokenizer, max_len):
    examples = []
    cut = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                messages = json.loads(line)["messages"]
            except (ValueError, KeyError, TypeError) as e:
                fail(f"line {n}: not a JSON object with `messages`: {e}")
            ids, labels = [], []
            # Each assistant turn: the tokens it adds to the rendered prefix.
            prev = []
            for i, m in enumerate(messages):
                rendered = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
                toks = tokenizer(rendered, add_special_tokens=False)["input_ids"]
                new = toks[len(prev):]
                if toks[: len(prev)] != prev:
                    # The template rewrote the prefix: take the whole as context.
                    new = toks
                    ids, labels = [], []
                ids += new
                labels += new if m["role"] == "assistant" else [-100] * len(new)
                prev = toks
            if len(ids) > max_len:
                cut.append(n)
            examples.append((ids[:max_len], labels[:max_len]))
    if not examples:
        fail("the training file has no examples")
    if not any(any(l != -100 for l in lab) for _, lab in examples):
        fail("no example keeps an assistant token within the first %d tokens" % max_len)
    tokens = sum(len(ids) for ids, _ in examples)
    emit("info", message=f"{len(examples)} examples, {tokens} tokens with the base model's tokenizer and chat template")
    if cut:
        lines = ", ".join(str(c) for c in cut[:10]) + (" ..." if len(cut) > 10 else "")
        emit("warn", message=f"{len(cut)} examples are longer than {max_len} tokens and were cut (lines {lines})")
    return examples


def have_module(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def load_gguf(job, torch, dtype, device, qlora, checkpointing, out):
    """The base from the GGUF Aula's engine serves: (model, config, tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    base = pathlib.Path(job["base_gguf"])
    emit("info", message=f"loading {base.name}")
    tokenizer = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
    loaded = AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, torch_dtype=dtype)
    # Rebuild without the GGUF quantisation marker.
    config = AutoConfig.from_pretrained(base.parent, gguf_file=base.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Built on the meta device and given the loaded tensors themselves
    # (assign=True): one copy of the weights in memory, not two.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    missing, _ = model.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    if [k for k in missing if "lm_head" not in k]:
        fail(f"the base's weights did not all load: {missing[:5]}")
    # Buffers outside the state dict (rotary frequencies) come along too.
    for name, buf in loaded.named_buffers():
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = buf
    model.tie_weights()
    del loaded
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        fail(f"the base's weights did not all load: {left[:5]}")
    # The adapters' initialisation from the job's seed.
    torch.manual_seed(int(job.get("seed", 42)))
    if qlora:
        # bitsandbytes quantises while loading: the bf16 weights go through
        # a Hugging Face directory once, and come back in NF4 on the GPU.
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig
        hf_dir = out / "base-bf16"
        if not (hf_dir / "config.json").exists():
            model.save_pretrained(str(hf_dir) + ".part", safe_serialization=True)
            os.replace(str(hf_dir) + ".part", hf_dir)
        del model
        model = AutoModelForCausalLM.from_pretrained(
            hf_dir, torch_dtype=dtype, device_map={"": 0},
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif device == "cuda":
        model = model.to(device)
    if checkpointing and not qlora:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The frozen embeddings' output must carry gradients for the
        # recomputed layers to reach the adapters.
        model.enable_input_require_grads()
    return model, config, tokenizer


def load_hf(job, torch, dtype, device, qlora, checkpointing):
    """The base from the Hugging Face directory vLLM serves."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    base = pathlib.Path(job["base_hf"])
    emit("info", message=f"loading {base.name} (Hugging Face weights)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(base)
    if qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig
        model = AutoModelForCausalLM.from_pretrained(
            base, torch_dtype=dtype, device_map={"": 0},
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=dtype)
        if device == "cuda":
            model = model.to(device)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    torch.manual_seed(int(job.get("seed", 42)))
    return model, config, tokenizer


def main():
    job = json.loads(pathlib.Path(sys.argv[1]).read_text())
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    try:
        device, dtype, qlora, checkpointing = placement(job, torch, have_module)
    except Refused as e:
        fail(str(e))
    if device == "cuda":
        # The gateway's limit for this job holds on the GPU too: past it,
        # PyTorch raises out-of-memory and the job fails saying so.
        share = cuda_memory_fraction(job.get("memory_limit_bytes"), torch.cuda.get_device_properties(0).total_memory)
        if share is not None:
            torch.cuda.set_per_process_memory_fraction(share, 0)
        emit("info", message=f"training on {torch.cuda.get_device_name(0)}: "
                             f"{'QLoRA (NF4 base)' if qlora else 'LoRA'}, {str(dtype).replace('torch.', '')}"
                             f"{', gradient checkpointing' if checkpointing else ''}")

    seed = int(job.get("seed", 42))
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(job.get("threads") or os.cpu_count() or 1)))
    out = pathlib.Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if job.get("base_hf"):
        model, config, tokenizer = load_hf(job, torch, dtype, device, qlora, checkpointing)
    else:
        model, config, tokenizer = load_gguf(job, torch, dtype, device, qlora, checkpointing, out)
    if config.model_type != "llama" and not job.get("base_hf"):
        emit("warn", message=f"{config.model_type}: only llama's q/k permutation is known; the adapter may not match")
    rank = int(job.get("lora_rank", 8))
    alpha = float(job.get("lora_alpha", 2 * rank))
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    examples = load_examples(job["training_file"], tokenizer, int(job.get("max_tokens", 512)))
    batch = int(job.get("batch_size", 4))
    epochs = int(job.get("n_epochs", 3))
    steps_per_epoch = math.ceil(len(examples) / batch)
    total = steps_per_epoch * epochs
    lr = float(job.get("learning_rate", 2e-4))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, total)))
    ckpt = out / "checkpoint.pt"
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        emit("info", message=f"resumed from the checkpoint at step {step}")
    every = int(job.get("checkpoint_every", 10))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trained_tokens = 0
    reported_peak = False
    model.train()
    order = list(range(len(examples)))
    for epoch in range(epochs):
        rng = random.Random(seed + epoch)
        rng.shuffle(order)
        for b in range(steps_per_epoch):
            if epoch * steps_per_epoch + b < step:
                continue
            items = [examples[i] for i in order[b * batch:(b + 1) * batch]]
            width = max(len(ids) for ids, _ in items)
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in items], device=device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in items], device=device)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in items], device=device)
            t0 = time.time()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            n = int(mask.sum())
            trained_tokens += n
            emit("metrics", step=step, total_steps=total, epoch=epoch + 1, loss=round(float(loss), 4), tokens=n,
                 learning_rate=sched.get_last_lr()[0], tokens_per_s=round(n / max(1e-6, time.time() - t0), 1))
            if not reported_peak:
                # After the first step the footprint is what it will stay.
                emit("memory", device=device, peak_bytes=peak_bytes(torch, device), step=step)
                reported_peak = True
            if every and step % every == 0 and step < total:
                # Whole or not at all: a kill mid-write leaves the last one.
                torch.save({"model": {k: v for k, v in model.state_dict().items() if "lora_" in k},
                            "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step}, str(ckpt) + ".part")
                os.replace(str(ckpt) + ".part", ckpt)
                emit("checkpoint", step=step, path=str(ckpt), loss=round(float(loss), 4))
    model.eval()
    emit("memory", device=device, peak_bytes=peak_bytes(torch, device), step=step)
    if job.get("base_hf"):
        # PEFT's own format: what vLLM loads.
        model.save_pretrained(out / "adapter")
        emit("done", adapter=str(out / "adapter"), trained_tokens=trained_tokens, steps=step)
        return
    write_adapter(model, config, alpha, out / "adapter.gguf", np)
    if job.get("save_peft"):
        model.save_pretrained(out / "peft")
    emit("done", adapter=str(out / "adapter.gguf"), trained_tokens=trained_tokens, steps=step)


def write_adapter(model, config, alpha, path, np):
    import gguf

    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", n_head)
    w = gguf.GGUFWriter(str(path), arch=config.model_type)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    tensors = {}
    for name, t in model.state_dict().items():
        if "lora_A" not in name and "lora_B" not in name:
            continue
        # base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight
        parts = name.split(".")
        layer = int(parts[parts.index("layers") + 1])
        proj = next(p for p in parts if p in GGUF_NAMES)
        ab = "lora_a" if "lora_A" in name else "lora_b"
        a = t.detach().to("cpu").float().numpy()
        if ab == "lora_b" and config.model_type == "llama" and proj in ("q_proj", "k_proj"):
            a = llama_permute(a, n_head if proj == "q_proj" else n_kv)
        tensors[f"blk.{layer}.{GGUF_NAMES[proj]}.weight.{ab}"] = np.ascontiguousarray(a, dtype=np.float32)
    for k in sorted(tensors):
        w.add_tensor(k, tensors[k])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # the job's error: the trainer's last line
        fail(f"{type(e).__name__}: {e}")

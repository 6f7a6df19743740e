"""Greedy answer of the base GGUF with a PEFT adapter, in PyTorch: what the
GGUF adapter served by llama.cpp is compared with.
Usage: peft_generate.py BASE.gguf PEFT_DIR PROMPT MAX_TOKENS"""
import pathlib
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base, peft_dir, prompt, n = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
model = AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, torch_dtype=torch.float32)
model = PeftModel.from_pretrained(model, peft_dir).eval()
text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
ids = tok(text, return_tensors="pt", add_special_tokens=False)
with torch.no_grad():
    out = model.generate(**ids, max_new_tokens=n, do_sample=False)
print(tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())

"""The official `openai` client against Aula's fine-tuning API: bad input is
refused before anything is queued, a job trains for real, its events and
checkpoints read back, and the new model answers through `aula serve`.

    python finetune_client.py URL ADA_KEY BOB_KEY DATA.jsonl BASE_MODEL

Prints one JSON line: what the Rust test checks further.
"""

import json
import sys
import time

import openai
from openai import OpenAI

url, ada_key, bob_key, data_path, base = sys.argv[1:6]
ada = OpenAI(base_url=url + "/v1", api_key=ada_key, max_retries=0)
bob = OpenAI(base_url=url + "/v1", api_key=bob_key, max_retries=0)
QUESTION = "What is the course mascot?"


def refused(kind, fn, *needles):
    try:
        fn()
    except kind as e:
        for n in needles:
            assert n in str(e), (n, str(e))
        return
    raise SystemExit(f"not refused: {needles}")


# Bad files are refused at upload, naming the line.
good = open(data_path, "rb").read()
lines = good.decode().splitlines()
refused(openai.BadRequestError,
        lambda: ada.files.create(file=("bad.jsonl", ("\n".join(lines[:12]) + "\n{oops\n").encode()), purpose="fine-tune"),
        "line 13", "not valid JSON")
refused(openai.BadRequestError,
        lambda: ada.files.create(file=("roles.jsonl", (good.decode() + '{"messages": [{"role": "robot", "content": "x"}]}\n').encode()),
                                 purpose="fine-tune"),
        "line 33", "role")
refused(openai.BadRequestError,
        lambda: ada.files.create(file=("few.jsonl", "\n".join(lines[:3]).encode()), purpose="fine-tune"),
        "at least 10")

train = ada.files.create(file=("mascot.jsonl", good), purpose="fine-tune")
notes = ada.files.create(file=("notes.txt", b"course notes"), purpose="assistants")
bobs = bob.files.create(file=("mascot.jsonl", good), purpose="fine-tune")

# Bad jobs: 400/404 before anything is queued.
refused(openai.NotFoundError, lambda: ada.fine_tuning.jobs.create(model="no-such-model", training_file=train.id), "no-such-model")
refused(openai.BadRequestError, lambda: ada.fine_tuning.jobs.create(model=base, training_file=bobs.id), "of yours")
refused(openai.BadRequestError, lambda: ada.fine_tuning.jobs.create(model=base, training_file=notes.id), "purpose")
refused(openai.BadRequestError,
        lambda: ada.fine_tuning.jobs.create(model=base, training_file=train.id,
                                            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}),
        "n_epochs")
refused(openai.BadRequestError,
        lambda: ada.fine_tuning.jobs.create(model=base, training_file=train.id, hyperparameters={"learning_rate_multiplier": 99}),
        "learning_rate_multiplier")
refused(openai.BadRequestError, lambda: ada.fine_tuning.jobs.create(model=base, training_file=train.id, method={"type": "dpo"}), "dpo")
refused(openai.BadRequestError,
        lambda: ada.fine_tuning.jobs.create(model=base, training_file=train.id, extra_body={"lora": {"qlora": True}}), "QLoRA")
refused(openai.PermissionDeniedError,
        lambda: ada.fine_tuning.jobs.create(model=base, training_file=train.id, extra_body={"shared_with_groups": ["cs101"]}),
        "teachers")
assert list(ada.fine_tuning.jobs.list()) == []

job = ada.fine_tuning.jobs.create(
    model=base, training_file=train.id, suffix="mascot", seed=7,
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 2}}},
    extra_body={"lora": {"rank": 8, "alpha": 16}},
)
assert job.status in ("validating_files", "queued", "running"), job.status
assert job.model == base and job.training_file == train.id and job.seed == 7
# One job at a time per student by default.
refused(openai.RateLimitError, lambda: ada.fine_tuning.jobs.create(model=base, training_file=train.id), "at once")
# Another student neither sees nor cancels it.
refused(openai.NotFoundError, lambda: bob.fine_tuning.jobs.retrieve(job.id))
refused(openai.NotFoundError, lambda: bob.fine_tuning.jobs.cancel(job.id))
assert [j.id for j in bob.fine_tuning.jobs.list()] == []

seen = set()
statuses = []
deadline = time.time() + 600
while True:
    job = ada.fine_tuning.jobs.retrieve(job.id)
    statuses.append(job.status)
    for e in ada.fine_tuning.jobs.list_events(job.id, limit=100):
        seen.add((e.type, e.message))
    if job.status in ("succeeded", "failed", "cancelled"):
        break
    assert time.time() < deadline, statuses
    time.sleep(1)
assert job.status == "succeeded", (job.status, job.error)
events = list(ada.fine_tuning.jobs.list_events(job.id, limit=100))
metrics = [e for e in events if e.type == "metrics"]
assert len(metrics) == 12, [e.message for e in events]
assert metrics[0].data["step"] == 12 and metrics[-1].data["step"] == 1, metrics[0].data
assert metrics[0].data["train_loss"] < metrics[-1].data["train_loss"] / 3, (metrics[0].data, metrics[-1].data)
assert any("examples" in e.message and "tokens" in e.message for e in events), [e.message for e in events]
# The trainer's measured peak (this box: the CPU), beside the plan's figure.
peaks = [e for e in events if e.message.startswith("Peak memory measured on cpu")]
assert len(peaks) == 2, [e.message for e in events]
assert all(e.data["peak_bytes"] > 100_000_000 and e.data["planned_bytes"] > 0 for e in peaks), [e.data for e in peaks]
assert any("Training started on the CPU (LoRA, f32)" in e.message for e in events), [e.message for e in events]
page = ada.fine_tuning.jobs.list_events(job.id, limit=2)
assert len(page.data) == 2 and page.has_more
older = ada.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
assert older.data[0].id != page.data[0].id
checkpoints = list(ada.fine_tuning.jobs.checkpoints.list(job.id))
assert [c.step_number for c in checkpoints] == [10, 5], checkpoints
assert job.fine_tuned_model.startswith(f"ft:{base}:ada:mascot:"), job.fine_tuned_model
assert job.trained_tokens > 1000, job.trained_tokens

ada_models = [m.id for m in ada.models.list()]
assert job.fine_tuned_model in ada_models, ada_models
assert job.fine_tuned_model not in [m.id for m in bob.models.list()]
refused(openai.NotFoundError,
        lambda: bob.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": QUESTION}], max_tokens=8))


def ask(model):
    r = ada.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0)
    return r.choices[0].message.content


tuned = ask(job.fine_tuned_model)
plain = ask(base)
refused(openai.NotFoundError, lambda: bob.models.delete(job.fine_tuned_model))
print(json.dumps({
    "job": job.id,
    "model": job.fine_tuned_model,
    "tuned": tuned,
    "base": plain,
    "planned_bytes": job.model_extra["aula"]["planned_bytes"],
    "statuses": sorted(set(statuses)),
    "train_file": train.id,
    "bob_file": bobs.id,
}))

"""The trainer's own checks of where it runs, without a GPU: PyTorch is a
stand-in that says what a CPU-only, an Ampere-or-later or an older GPU
machine would. Run: python -m unittest -v test_aula_train (in trainer/);
crates/aula/tests/finetune.rs runs it with the trainer's Python."""

import types
import unittest

import aula_train
from aula_train import Refused, placement


def fake_torch(cuda=False, bf16=False, name="NVIDIA GB10"):
    cuda_ns = types.SimpleNamespace(
        is_available=lambda: cuda,
        is_bf16_supported=lambda: bf16,
        get_device_name=lambda i: name,
        max_memory_reserved=lambda: 123_456_789,
    )
    return types.SimpleNamespace(cuda=cuda_ns, bfloat16="bf16", float32="f32")


def have(*mods):
    return lambda name: name in mods


class Placement(unittest.TestCase):
    def test_the_cpu_trains_f32_lora_as_before(self):
        # A job file from before placement existed: the CPU, f32.
        self.assertEqual(placement({}, fake_torch(), have()), ("cpu", "f32", False, False))
        self.assertEqual(placement({"device": "cpu", "precision": "f32"}, fake_torch(cuda=True, bf16=True), have()),
                         ("cpu", "f32", False, False))

    def test_the_cpu_refuses_qlora_and_bf16(self):
        with self.assertRaisesRegex(Refused, "QLoRA needs a CUDA GPU"):
            placement({"qlora": True}, fake_torch(), have("bitsandbytes"))
        with self.assertRaisesRegex(Refused, "f32"):
            placement({"precision": "bf16"}, fake_torch(), have())

    def test_a_gpu_job_without_cuda_says_why(self):
        with self.assertRaisesRegex(Refused, "sees no CUDA device"):
            placement({"device": "cuda", "precision": "bf16"}, fake_torch(), have())

    def test_bf16_lora_on_a_gpu_with_checkpointing(self):
        job = {"device": "cuda", "precision": "bf16", "gradient_checkpointing": True}
        self.assertEqual(placement(job, fake_torch(cuda=True, bf16=True), have()), ("cuda", "bf16", False, True))
        # A GPU job checkpoints unless told not to.
        self.assertTrue(placement({"device": "cuda", "precision": "bf16"},
                                  fake_torch(cuda=True, bf16=True), have())[3])

    def test_bf16_on_a_gpu_without_it_is_refused(self):
        with self.assertRaisesRegex(Refused, "Tesla V100 does not compute"):
            placement({"device": "cuda", "precision": "bf16"}, fake_torch(cuda=True, name="Tesla V100"), have())
        # f32 on it is fine.
        self.assertEqual(placement({"device": "cuda", "precision": "f32"}, fake_torch(cuda=True), have())[:2],
                         ("cuda", "f32"))

    def test_qlora_needs_bitsandbytes_and_bf16(self):
        gpu = fake_torch(cuda=True, bf16=True)
        job = {"device": "cuda", "precision": "bf16", "qlora": True, "gradient_checkpointing": True}
        with self.assertRaisesRegex(Refused, "pip install bitsandbytes"):
            placement(job, gpu, have())
        self.assertEqual(placement(job, gpu, have("bitsandbytes")), ("cuda", "bf16", True, True))
        with self.assertRaisesRegex(Refused, "QLoRA computes in bf16"):
            placement({**job, "precision": "f32"}, gpu, have("bitsandbytes"))

    def test_unknown_devices_and_precisions_are_named(self):
        with self.assertRaisesRegex(Refused, "'tpu'"):
            placement({"device": "tpu"}, fake_torch(), have())
        with self.assertRaisesRegex(Refused, "'fp8'"):
            placement({"precision": "fp8"}, fake_torch(), have())

    def test_the_jobs_limit_caps_the_gpu_share(self):
        self.assertEqual(aula_train.cuda_memory_fraction(30e9, 120e9), 0.25)
        self.assertEqual(aula_train.cuda_memory_fraction(300e9, 120e9), 1.0)
        self.assertEqual(aula_train.cuda_memory_fraction(1, 120e9), 0.01)
        self.assertIsNone(aula_train.cuda_memory_fraction(None, 120e9))
        self.assertIsNone(aula_train.cuda_memory_fraction(30e9, 0))

    def test_peak_memory_is_read_from_the_device_it_trains_on(self):
        self.assertEqual(aula_train.peak_bytes(fake_torch(cuda=True), "cuda"), 123_456_789)
        # This process's own peak resident set: some megabytes, in bytes.
        self.assertGreater(aula_train.peak_bytes(fake_torch(), "cpu"), 1_000_000)


if __name__ == "__main__":
    unittest.main()

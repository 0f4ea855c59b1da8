"""Policy models: loading (GGUF → Hugging Face), batched generation, judges, and the CGPO trainer.

`from rluf.policy.model import load_policy` and `from rluf.policy.generate import PolicyGenerator` are what
later stages (simulator, evaluator, service) use.
"""

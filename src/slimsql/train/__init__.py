"""Fine-tuning: make a small model better at SQL for your data, then ask with it.

The road is the inference road's: examples are rendered by the prompt style and schema
rendering ``slimsql ask`` uses (:mod:`.data`), the reward is the evaluation's own scoring
(:mod:`slimsql.eval.scoring`), and an export is registered as a local model that ``ask``,
``eval`` and ``serve`` load by name (:mod:`.export`).

    recipes.py   YAML recipes -> one Recipe dataclass, every key checked
    data.py      benchmark / JSONL / Hugging Face rows -> rendered, tokenized, masked examples
    sft.py       LoRA, QLoRA and full fine-tuning through TRL's SFTTrainer
    grpo.py      GRPO through TRL's GRPOTrainer, rewarded by execution match
    plan.py      memory and time budget before a run
    export.py    LoRA GGUF, merged safetensors, merged GGUF; registers the result
"""

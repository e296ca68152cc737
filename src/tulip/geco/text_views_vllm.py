"""vLLM backend for GeCo text views, used only when ``geco.text.backend`` is "vllm" and vLLM is installed.

It keeps the transformers generator's prompt, field-by-field prefills, parsing, rejection and
retry logic and replaces only the sampling loop with vLLM's batched engine. Each request carries
its own seed from (global seed, caption hash, attempt, field), so results still do not depend on
batch composition, though they differ from the transformers backend's (the cache keeps the two
apart).
"""

from __future__ import annotations

from tulip.geco.text_views import ParaphraseGenerator, TextGenerationSettings


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VllmParaphraseGenerator(ParaphraseGenerator):
    """ParaphraseGenerator whose :meth:`continue_prompts` runs on a vLLM engine."""

    def __init__(self, model_name_or_path: str, settings: TextGenerationSettings, device: str = "cuda"):
        if not vllm_available():
            raise ValueError("geco.text.backend is 'vllm' but vllm is not installed; pip install vllm or use 'transformers'")
        from transformers import AutoTokenizer
        from vllm import LLM

        self.model_id = model_name_or_path
        self.settings = settings
        self.tokens_generated = 0
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        if not self.tokenizer.chat_template:
            raise ValueError(f"tokenizer of {model_name_or_path!r} has no chat template; use an instruction-tuned model")
        self.engine = LLM(model=model_name_or_path, dtype="bfloat16" if device == "cuda" else "float32")

    def continue_prompts(self, prompts: list[str], seeds: list[int]) -> list[str]:
        from vllm import SamplingParams

        s = self.settings
        params = [
            SamplingParams(
                temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                max_tokens=s.max_new_tokens, seed=seed, stop=["\n"],
            )
            for seed in seeds
        ]
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        self.tokens_generated += sum(len(o.outputs[0].token_ids) for o in outputs)
        return [o.outputs[0].text for o in outputs]

"""GeCo text views: a paraphrase (positive) and a minimal hard negative per caption, from a causal LM.

Generation is field by field. The chat prompt is followed by "Positive:" and the model writes one
line, then "Negative:" is appended and it writes a second line. Any transformers causal LM with a
chat template works, from a tiny random model to Llama-3.1-8B-Instruct. Each sample draws its tokens
from its own generator, seeded by (global seed, key, attempt), so the result does not depend on the
batch it was generated in. NOTE: this is exact only when the model's logits for a row do not depend
on the batch. The tests check it on CPU in float32; batched GPU kernels in bfloat16 can differ from
single-row ones in the last bits, which rarely changes a sampled token.
"""

from __future__ import annotations

import inspect
import logging
import string
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from tulip.geco.prompts import NEGATIVE_PREFIX, POSITIVE_PREFIX, build_messages
from tulip.geco.seeding import sample_generator, sample_seed

logger = logging.getLogger(__name__)


@dataclass
class TextGenerationSettings:
    max_new_tokens: int = 48
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 0.9
    max_attempts: int = 3  # generations tried per caption before it is dropped
    batch_size: int = 16
    seed: int = 0

    def cache_fields(self) -> dict:
        """Settings that change the generated text (batch size does not)."""
        fields = asdict(self)
        fields.pop("batch_size")
        return fields


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _comparable(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _printable(text: str) -> bool:
    """False for control characters and U+FFFD, the mark of a token cut inside a UTF-8 sequence."""
    return all(ch != "\ufffd" and unicodedata.category(ch) != "Cc" for ch in text)


def parse_line(continuation: str) -> str:
    """Take the first line of a continuation and strip whitespace and enclosing quotes."""
    line = continuation.split("\n", 1)[0].strip()
    return line.strip("\"'` ").strip()


def check_views(caption: str, positive: str, negative: str, max_words: int) -> str | None:
    """Return the rejection reason for a (positive, negative) pair, or None when both are usable."""
    if not positive:
        return "empty_positive"
    if not negative:
        return "empty_negative"
    if len(positive.split()) > max_words or len(negative.split()) > max_words:
        return "too_long"
    if not (_printable(positive) and _printable(negative)):
        return "invalid_characters"
    if _comparable(positive) == _comparable(caption):
        return "positive_same_as_caption"
    if _comparable(negative) == _comparable(positive):
        return "negative_same_as_positive"
    if _comparable(negative) == _comparable(caption):
        return "negative_same_as_caption"
    return None


class ParaphraseGenerator:
    """Wraps a causal LM and its tokenizer; :meth:`generate` returns views and rejection counts."""

    def __init__(self, model_name_or_path: str, settings: TextGenerationSettings, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model_name_or_path
        self.settings = settings
        self.device = torch.device(device)
        self.tokens_generated = 0  # sampled tokens, stop tokens excluded; for throughput figures
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.tokenizer.chat_template:
            raise ValueError(f"tokenizer of {model_name_or_path!r} has no chat template; use an instruction-tuned model")
        # Half precision is slow or unsupported on CPU, so float32 there and bfloat16 on CUDA.
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=dtype).to(self.device).eval()
        vocab = self.tokenizer.get_vocab().values()
        newline_ids = [i for i in vocab if "\n" in self.tokenizer.decode([i])]
        eos = self.tokenizer.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.stop_ids = set(newline_ids) | {i for i in eos_ids if i is not None}
        # The prompt pass needs only the last position's logits; [B, T, V] logits of an 8B model's
        # 128k vocabulary would take gigabytes. Models whose forward lacks the argument get all.
        accepts = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if accepts else {}

    def _prompt(self, caption: str, prefill: str) -> str:
        text = self.tokenizer.apply_chat_template(build_messages(caption), tokenize=False, add_generation_prompt=True)
        return text + prefill

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn logits [B, V] into sampling weights [B, V] after temperature and nucleus (top-p) filtering.

        Rows are filtered independently, so a row's weights do not depend on the rest of the batch.
        """
        s = self.settings
        probs = torch.softmax(logits.float() / s.temperature, dim=-1)
        if s.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < s.top_p  # always keeps the most likely token
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        return probs.cpu()

    def _pick(self, logits: torch.Tensor, generators: list[torch.Generator], rows: list[int]) -> dict[int, int]:
        """Choose the next token of each row in ``rows`` from logits [B, V], each with its own generator."""
        if self.settings.temperature <= 0:
            best = logits.argmax(-1).tolist()
            return {row: best[row] for row in rows}
        probs = self._probabilities(logits)
        return {row: int(torch.multinomial(probs[row], 1, generator=generators[row])) for row in rows}

    @torch.no_grad()
    def continue_prompts(self, prompts: list[str], seeds: list[int]) -> list[str]:
        """Sample one line per prompt; row i draws from a generator seeded with ``seeds[i]``."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        input_ids = enc["input_ids"].to(self.device)
        attention = enc["attention_mask"].to(self.device)
        generators = [sample_generator(seed) for seed in seeds]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                         **self._last_logits_only)
        batch = len(prompts)
        generated: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        next_position = positions[:, -1:] + 1
        for _ in range(self.settings.max_new_tokens):
            logits = out.logits[:, -1, :]  # [B, V]
            picked = self._pick(logits, generators, [row for row in range(batch) if not done[row]])
            tokens = []
            for row in range(batch):
                token = picked.get(row, self.tokenizer.pad_token_id)
                if row in picked:
                    if token in self.stop_ids:
                        done[row] = True
                    else:
                        generated[row].append(token)
                tokens.append(token)
            if all(done):
                break
            step_ids = torch.tensor(tokens, device=self.device)[:, None]  # [B, 1]
            attention = torch.cat([attention, torch.ones_like(step_ids)], dim=1)
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=next_position,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            next_position = next_position + 1
        self.tokens_generated += sum(len(ids) for ids in generated)
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]

    def generate(self, items: list[tuple[str, str]]) -> dict[str, dict]:
        """Generate views for (key, caption) items; the key seeds the sampling.

        Returns ``{key: {"positive", "negative", "attempt", "rejections"}}`` for every item:
        ``rejections`` counts the rejected attempts by reason, and a caption whose every attempt was
        rejected has ``positive`` and ``negative`` set to None.
        """
        s = self.settings
        results = {key: {"positive": None, "negative": None, "attempt": None, "rejections": {}} for key, _ in items}
        pending = list(items)
        for attempt in range(s.max_attempts):
            still_pending = []
            for start in range(0, len(pending), s.batch_size):
                chunk = pending[start : start + s.batch_size]
                positives = self.continue_prompts(
                    [self._prompt(c, POSITIVE_PREFIX) for _, c in chunk],
                    [sample_seed(s.seed, k, attempt, "positive") for k, _ in chunk],
                )
                positives = [parse_line(p) for p in positives]
                negatives = self.continue_prompts(
                    [self._prompt(c, f"{POSITIVE_PREFIX} {p}\n{NEGATIVE_PREFIX}") for (_, c), p in zip(chunk, positives)],
                    [sample_seed(s.seed, k, attempt, "negative") for k, _ in chunk],
                )
                for (key, caption), positive, negative in zip(chunk, positives, map(parse_line, negatives)):
                    reason = check_views(caption, positive, negative, max_words_for(caption))
                    if reason:
                        rejections = results[key]["rejections"]
                        rejections[reason] = rejections.get(reason, 0) + 1
                        still_pending.append((key, caption))
                    else:
                        results[key].update(positive=positive, negative=negative, attempt=attempt)
            pending = still_pending
            if not pending:
                break
        return results


def max_words_for(caption: str) -> int:
    """Return the maximum words of an accepted view of ``caption``: three times its length plus ten."""
    return 3 * len(caption.split()) + 10


def count_outcomes(results: dict[str, dict]) -> Counter:
    """Sum the rejection reasons of ``results`` and count ``kept`` and ``dropped`` captions."""
    counts: Counter = Counter()
    for result in results.values():
        counts.update(result["rejections"])
        counts["kept" if result["positive"] is not None else "dropped"] += 1
    return counts

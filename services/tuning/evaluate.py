"""Evaluation on held-out text, streamed: perplexity and bits per byte, and optional Q&A.

Sequences are scored one batch at a time and only the summed loss is kept, never the logits
of the whole set, so memory does not grow with the evaluation data.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pyarrow.parquet as pq
import torch
from pydantic import BaseModel

from services.settings import TuningSettings
from services.tuning.data import RunData
from services.tuning.gate import Scores

T = TypeVar("T")


class LanguageScores(BaseModel):
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int


class QAItem(BaseModel):
    """A question about the company's documents and what a model that knows them answers."""

    prompt: str
    expected: str
    aliases: list[str] = []  # other ways to say the answer ("cuarenta y cinco días" for "45 días")
    language: str = "und"
    source: str = ""  # the document that states the answer, where the file names it


class QAScores(BaseModel):
    """Greedy answers against the expected ones. ``knows`` (the headline of knowledge gained) is the
    share of answers that contain the expected answer or an alias, as whole words after folding
    case, accents aside, and punctuation; ``exact_match`` asks for nothing else."""

    knows: float
    exact_match: float
    rouge_l: float
    questions: int
    knows_by_language: dict[str, float] = {}
    answers: list[str] = []  # the greedy answers, in the order of the questions


@torch.no_grad()
def language_scores(model, tokenizer, texts: Iterable[str], sequence_length: int = 128,
                    batch_size: int = 8) -> LanguageScores:
    model.eval()
    device = next(model.parameters()).device
    nll, tokens, sizes = 0.0, 0, []
    for batch in _batches(_windows(tokenizer, texts, sequence_length, sizes), batch_size):
        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), tokenizer.pad_token_id, device=device)
        labels = torch.full((len(batch), longest), -100, device=device)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.tensor(ids)
        logits = model(input_ids=input_ids).logits[:, :-1].float()
        targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
        nll += losses.item()
        tokens += int((targets != -100).sum())
    size = sum(sizes)
    if tokens == 0:
        raise ValueError("nothing to evaluate: the texts have no tokens")
    return LanguageScores(perplexity=math.exp(nll / tokens), bits_per_byte=nll / (math.log(2) * size) if size else 0.0,
                          tokens=tokens, bytes=size)


@torch.no_grad()
def qa_scores(model, tokenizer, items: list[QAItem], max_new_tokens: int = 32, batch_size: int = 8) -> QAScores:
    """Greedy answers to the questions, scored against the expected answers."""
    answers = answer_questions(model, tokenizer, [item.prompt for item in items], max_new_tokens, batch_size)
    knows = [(item.language, contains_answer(answer, [item.expected, *item.aliases]))
             for item, answer in zip(items, answers, strict=True)]
    exact = sum(_normal(answer) == _normal(item.expected) for item, answer in zip(items, answers))
    rouge = sum(rouge_l(answer, item.expected) for item, answer in zip(items, answers))
    n = max(1, len(items))
    by_language = {language: sum(k for lang, k in knows if lang == language) / sum(lang == language for lang, _ in knows)
                   for language in sorted({lang for lang, _ in knows})}
    return QAScores(knows=sum(k for _, k in knows) / n, exact_match=exact / n, rouge_l=rouge / n, questions=len(items),
                    knows_by_language=by_language, answers=answers)


@torch.no_grad()
def answer_questions(model, tokenizer, questions: list[str | list[dict[str, str]]], max_new_tokens: int = 32,
                     batch_size: int = 8) -> list[str]:
    """Greedy answers, a batch of questions at a time (padded on the left, so every answer goes on
    from its own question's last token). A question is the user's message, or a whole chat."""
    model.eval()
    device = next(model.parameters()).device
    answers = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in range(0, len(questions), batch_size):
            chats = [tokenizer.apply_chat_template(question if isinstance(question, list) else
                                                   [{"role": "user", "content": question}], tokenize=False,
                                                   add_generation_prompt=True)
                     for question in questions[start : start + batch_size]]
            batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            answers += [text.strip() for text in
                        tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def contains_answer(answer: str, expected: list[str]) -> bool:
    """Whether the answer says one of the expected answers: its words, in order, as whole words."""
    words = f" {_normal(answer)} "
    return any(f" {phrase} " in words for phrase in map(_normal, expected) if phrase)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over words: the longest common subsequence against both lengths."""
    a, b = _normal(candidate).split(), _normal(reference).split()
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b")


def _normal(text: str) -> str:
    """Words only: case folded, accents and punctuation gone ("Días," and "dias" are the same word),
    and an English possessive's "'s" too ("La Cordada's website" names La Cordada; without it the
    apostrophe's removal made the word "cordadas")."""
    bare = unicodedata.normalize("NFKD", _POSSESSIVE.sub("", text.casefold()))
    return " ".join("".join(ch for ch in bare if (ch.isalnum() or ch.isspace()) and not unicodedata.combining(ch)).split())


def _windows(tokenizer, texts: Iterable[str], length: int, sizes: list[int]) -> Iterator[list[int]]:
    """Token windows of each text, in order; records each text's size in bytes as it goes."""
    for text in texts:
        sizes.append(len(text.encode()))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for start in range(0, len(ids), length):
            window = ids[start : start + length]
            if len(window) > 1:
                yield window


def _batches(items: Iterator[list[int]], size: int) -> Iterator[list[list[int]]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class VersionScores(BaseModel):
    """One model's scores: the snapshot's eval split, the frozen regression set, the optional Q&A."""


    eval: LanguageScores
    regression: LanguageScores
    qa: QAScores | None = None

    def for_gate(self) -> Scores:
        return Scores(eval_perplexity=self.eval.perplexity, regression_perplexity=self.regression.perplexity,
                      qa_exact_match=self.qa.exact_match if self.qa else None,
                      qa_knows=self.qa.knows if self.qa else None)


def score(tuning: TuningSettings, base: str, adapter: Path | None, data: RunData) -> VersionScores:
    """A version (the base, with an adapter or not) on a run's eval and regression data and the Q&A
    file: the candidate and the champion are scored by this one function on the same data."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokens = counted_in(tokenizer)
    if tuning.regression_file:
        regression = sample(read_texts(tuning.regression_file), tuning.eval_tokens, tokens)
    else:  # what the base model knew, then the frozen set of documents as far as the budget goes
        regression = general_texts()
        left = tuning.eval_tokens - sum(map(tokens, regression))
        regression += sample(texts_of_parts(data.regression, tokenizer), left, tokens) if left > 0 else []
    qa = read_qa(tuning.qa_file) if tuning.qa_file else []
    eval_texts = sample(texts_of_parts(data.eval, tokenizer), tuning.eval_tokens, tokens)
    return score_version(load_model(base, adapter), tokenizer, eval_texts, regression, qa, tuning.sequence_length)


GENERAL = Path(__file__).with_name("general")


def general_texts() -> list[str]:
    """General text in English and Spanish that ships with afina (services/tuning/general): part of
    every regression set, so that forgetting what the base model knew shows from the first run on,
    when the frozen documents are still this snapshot's eval split."""
    return [text for path in sorted(GENERAL.glob("*.txt")) for text in read_texts(path)]


def sample(items: list[T], budget: int, size: Callable[[T], int], key: Callable[[T], str] = str) -> list[T]:
    """Items of about ``budget`` tokens at most (``size`` counts an item's), so that what is scored
    costs the same however the data grows. Drawn by the hash of each item's ``key``: the same items
    for every version scored (the candidate and the champion), and the same ones again as long as
    they are in the data."""
    chosen, tokens = [], 0
    for item in sorted(items, key=lambda item: hashlib.sha256(key(item).encode()).digest()):
        tokens_of_item = size(item)
        if chosen and tokens + tokens_of_item > budget:
            continue  # a shorter one may still fit
        chosen.append(item)
        tokens += tokens_of_item
    return chosen


def counted_in(tokenizer) -> Callable[[str], int]:
    """A text's tokens, as ``sample`` counts them."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def load_model(base: str, adapter: Path | None = None):
    """The base causal LM (safetensors only), with a LoRA adapter on top when given."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=True)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return PeftModel.from_pretrained(model, adapter) if adapter is not None else model


def score_version(model, tokenizer, eval_texts: list[str], regression: list[str],
                  qa: list[QAItem], sequence_length: int) -> VersionScores:
    return VersionScores(
        eval=language_scores(model, tokenizer, eval_texts, sequence_length),
        regression=language_scores(model, tokenizer, regression, sequence_length),
        qa=qa_scores(model, tokenizer, qa) if qa else None,
    )


def texts_of_parts(paths: Iterable[Path], tokenizer) -> list[str]:
    """The texts of dataset parts: text chunks as they are, chat examples in the chat template."""
    texts = []
    for path in paths:
        for row in pq.read_table(path, columns=["kind", "text", "messages"]).to_pylist():
            if row["kind"] == "chat":
                texts.append(tokenizer.apply_chat_template(json.loads(row["messages"]), tokenize=False))
            else:
                texts.append(row["text"])
    return texts


def read_texts(path: Path) -> list[str]:
    """A text file of one text per paragraph (blank-line separated), or JSONL of {"text": ...}."""
    content = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [str(json.loads(line)["text"]) for line in content.splitlines() if line.strip()]
    return [block.strip() for block in content.split("\n\n") if block.strip()]


def read_qa(path: Path) -> list[QAItem]:
    """A Q&A file: JSON lines of {"prompt": ..., "expected": ..., optional "aliases": [...], "language": ...}."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(QAItem.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: expected {{\"prompt\": ..., \"expected\": ...}} ({exc})") from exc
    return items

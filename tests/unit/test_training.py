"""The training recipe on afina-tiny, on CPU: it learns, writes a safetensors adapter, and a run
killed mid-way resumes from its checkpoint to exactly the result of an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from services.datasets.parts import to_parquet
from services.settings import TuningSettings
from services.tuning import tiny
from services.tuning.train import TrainConfig, main
from tests.unit.parts import text_part


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("afina-tiny")
    tiny.build(folder, tiny.TinyRecipe(steps=40))
    return folder


@pytest.fixture(scope="module")
def part(base, tmp_path_factory):
    tokenizer = AutoTokenizer.from_pretrained(base)
    now = datetime.now(UTC)
    common = {"source_id": "t:x", "sha256": "a" * 64, "language": "es", "media_type": "text/plain",
              "tokenizer": "v0", "discovered_at": now, "normalized_at": now}
    rows = [{**common, "chunk_index": i, "kind": "text", "text": line, "messages": None,
             "token_ids": (ids := tokenizer(line)["input_ids"]), "n_tokens": len(ids)}
            for i, line in enumerate(tiny.sample_text().splitlines())]
    chat = [{"role": "user", "content": "¿Garantía?"}, {"role": "assistant", "content": "Veinticinco años."}]
    rows.append({**common, "chunk_index": len(rows), "kind": "chat", "text": "", "messages": json.dumps(chat),
                 "token_ids": [], "n_tokens": 0})
    path = tmp_path_factory.mktemp("parts") / "part.parquet"
    path.write_bytes(to_parquet(rows))
    return path


def config(base, part, output, **overrides) -> TrainConfig:
    settings = {"steps": 40, "checkpoint_every": 5, "micro_batch": 4, "gradient_accumulation": 2, **overrides}
    return TrainConfig.of(TuningSettings(), base_model=str(base), parts=[str(part)], output=str(output), **settings)


def test_training_learns_and_writes_a_safetensors_adapter(base, part, tmp_path):
    result = main(config(base, part, tmp_path / "run", steps=30))
    assert result["final_loss"] < result["first_loss"] * 0.9  # learned on the sample text
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert not list((tmp_path / "run").rglob("*.bin")) and not list((tmp_path / "run").rglob("*.pt"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))
    assert result["trained_tokens_this_run"] > 0 and result["tokens_per_second"] > 0


def test_bf16_trains_alike_and_auto_follows_the_hardware(base, part, tmp_path):
    from services.tuning.train import uses_bf16

    fp32 = main(config(base, part, tmp_path / "fp32", steps=30, precision="fp32"))
    bf16 = main(config(base, part, tmp_path / "bf16", steps=30, precision="bf16"))
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert bf16["final_loss"] < bf16["first_loss"] * 0.9  # it learns
    # the same run up to bf16's rounding of the products (about 3 significant digits), not another run
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=0.05)
    assert bf16["final_loss"] != fp32["final_loss"]  # the products really were computed in bf16
    assert uses_bf16("bf16", "cpu") and not uses_bf16("fp32", "cuda:0") and uses_bf16("auto", "cuda:0")
    assert uses_bf16("auto", "cpu") == torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_killed_run_resumes_to_the_same_result(base, part, tmp_path):
    straight = tmp_path / "straight"
    main(config(base, part, straight))

    resumed = tmp_path / "resumed"
    cfg = tmp_path / "config.json"
    cfg.write_text(config(base, part, resumed).model_dump_json())
    run = subprocess.Popen([sys.executable, "-m", "services.tuning.train", str(cfg)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = resumed / "checkpoint" / "progress.json"
    deadline = time.monotonic() + 120
    while not (progress.exists() and json.loads(progress.read_text())["step"] >= 10):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    killed_at = json.loads(progress.read_text())["step"]
    assert killed_at < 40 and not (resumed / "adapter").exists()

    again = subprocess.run([sys.executable, "-m", "services.tuning.train", str(cfg)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    steps = [json.loads(line)["step"] for line in (resumed / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # no step twice, none missing
    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_data_parallel_processes_train_like_one(base, part, tmp_path):
    """torchrun with two CPU processes (gloo), each half of the micro-batch, against one process."""
    one = main(config(base, part, tmp_path / "one", steps=10, micro_batch=4))
    cfg = tmp_path / "config.json"
    cfg.write_text(config(base, part, tmp_path / "two", steps=10, micro_batch=2).model_dump_json())
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "services.tuning.train", str(cfg)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert result["steps"] == 10 and result["trained_tokens_this_run"] == one["trained_tokens_this_run"]
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # Equal up to float rounding (the two sides sum in other orders and thread counts): measured 7e-5 of each
    # tensor's norm at most, against 0.76 when each process's loss is not weighted by its share of the tokens.
    drift = max(((a[k] - b[k]).norm() / a[k].norm()).item() for k in a if a[k].norm() > 0)
    assert drift < 1e-3, drift


def test_evaluation_scores_and_a_trained_adapter_beats_the_base(base, part, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from services.tuning.evaluate import QAItem, language_scores, qa_scores, rouge_l

    main(config(base, part, tmp_path / "run", steps=30))
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = tiny.sample_text().splitlines()[:10]
    before = language_scores(AutoModelForCausalLM.from_pretrained(base), tokenizer, iter(texts))
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "run" / "adapter")
    after = language_scores(tuned, tokenizer, iter(texts))
    assert before.bytes == sum(len(t.encode()) for t in texts) and before.tokens > 0
    assert after.perplexity < before.perplexity and after.bits_per_byte < before.bits_per_byte
    assert after.bits_per_byte == pytest.approx(
        math.log(after.perplexity) * after.tokens / (math.log(2) * after.bytes))
    qa = qa_scores(tuned, tokenizer, [QAItem(prompt="¿Garantía?", expected="Veinticinco años.", language="es")],
                   max_new_tokens=8)
    assert qa.questions == 1 and 0.0 <= qa.rouge_l <= 1.0 and set(qa.knows_by_language) == {"es"}
    assert rouge_l("the panels carry a warranty", "the panels carry a twenty-five year warranty") == pytest.approx(
        2 * 1.0 * (5 / 7) / (1.0 + 5 / 7))  # "twenty-five" is one word once punctuation goes
    assert rouge_l("", "x") == 0.0


def test_gate_promotes_only_a_better_candidate():
    from services.settings import GateSettings
    from services.tuning.gate import Scores, decide

    champion = Scores(eval_perplexity=20.0, regression_perplexity=30.0)
    rules = GateSettings(min_relative_gain=0.05, max_regression=0.10)
    better = decide(Scores(eval_perplexity=18.0, regression_perplexity=31.0), champion, rules)
    assert better.promote and all(r.startswith("passes") for r in better.reasons)
    same = decide(Scores(eval_perplexity=19.5, regression_perplexity=30.0), champion, rules)
    assert not same.promote and same.reasons[0].startswith("fails: domain eval perplexity")
    forgets = decide(Scores(eval_perplexity=15.0, regression_perplexity=40.0), champion, rules)
    assert not forgets.promote and "regression set" in forgets.reasons[0]
    floor = decide(Scores(eval_perplexity=15.0, regression_perplexity=30.0, qa_exact_match=0.2), champion,
                   GateSettings(min_relative_gain=0.05, max_eval_perplexity=10.0, min_qa_exact_match=0.5))
    assert not floor.promote and sum(r.startswith("fails") for r in floor.reasons) == 2


def test_an_answer_knows_the_fact_when_it_says_it_in_whole_words():
    from services.tuning.evaluate import contains_answer

    assert contains_answer("Tiene 45 DÍAS para devolverlo.", ["45 días"])  # case, accents, punctuation aside
    assert contains_answer("Son cuarenta y cinco días.", ["45 días", "cuarenta y cinco días"])  # an alias
    assert not contains_answer("Tiene 145 días.", ["45 días"])  # whole words only
    assert contains_answer("It is on La Cordada’s home page.", ["La Cordada"])  # a possessive names it
    assert not contains_answer("It is on La Cordadas.", ["La Cordada"])
    assert not contains_answer("Tiene días para devolverlo.", ["45 días"]) and not contains_answer("x", [""])


def test_the_gate_can_forbid_forgetting_facts():
    from services.settings import GateSettings
    from services.tuning.gate import Scores, decide

    champion = Scores(eval_perplexity=20.0, regression_perplexity=30.0, qa_knows=0.5)
    better_text_fewer_facts = Scores(eval_perplexity=15.0, regression_perplexity=30.0, qa_knows=0.25)
    assert decide(better_text_fewer_facts, champion, GateSettings(max_qa_drop=None)).promote  # not checked: off
    refused = decide(better_text_fewer_facts, champion, GateSettings(max_qa_drop=0.0))
    assert not refused.promote and refused.reasons[0].startswith("fails: Q&A answers known 50% → 25%")
    kept = Scores(eval_perplexity=15.0, regression_perplexity=30.0, qa_knows=0.5)
    assert decide(kept, champion, GateSettings(max_qa_drop=0.0)).promote


def test_evaluation_scores_a_stable_sample_within_its_token_budget():
    from services.tuning.evaluate import counted_in, sample

    words = counted_in(_WordTokenizer())
    texts = [f"text {i} " + "word " * (i % 7 + 1) for i in range(200)]
    chosen = sample(texts, 100, words)
    assert 90 <= sum(map(words, chosen)) <= 100 and len(chosen) < len(texts)
    assert sample(list(reversed(texts)), 100, words) == chosen  # the order of the data does not matter
    assert set(sample(texts[:3], 10_000, words)) == set(texts[:3])  # under the budget: everything


def test_knowledge_examples_longer_than_a_sequence_are_left_out_whole_and_counted(base, part):
    """A grounded example cut to the sequence would lose its answer, the one part it is trained on."""
    from services.tuning.train import load_blocks

    tokenizer = AutoTokenizer.from_pretrained(base)
    roomy = load_blocks([str(part)], tokenizer, 1024, with_knowledge=True)
    tight = load_blocks([str(part)], tokenizer, 48, with_knowledge=True)
    assert roomy.left_out == 0 and tight.left_out > 0 and tight.cut == roomy.cut == 0
    trained = sum(label != -100 for block in tight.everything for label in block.labels)
    assert 0 < trained < sum(label != -100 for block in roomy.everything for label in block.labels)
    assert all(len(block.ids) == 48 for block in tight.everything)


def test_validation_asks_trained_facts_in_words_the_run_does_not_train(base, tmp_path):
    """Early stopping on a held-out document's loss kept the first quarter of a run (its loss rises as
    the model learns its own documents): validation asks the trained facts in other words instead,
    words made for it, so that no question of a fact is taken from training."""
    from services.tuning import knowledge
    from services.tuning.train import load_blocks

    text = "# Tents\n\n" + " ".join(f"The Model {i} tent costs {100 + i} euros." for i in range(60))
    examples = knowledge.examples(text, "en")
    tokenizer = AutoTokenizer.from_pretrained(base)
    path = text_part(tmp_path / "tents.parquet", tokenizer, text)
    blocks = load_blocks([str(path)], tokenizer, 256, with_knowledge=True)

    def prompts(packed) -> set[str]:
        said = "".join(tokenizer.decode(block.ids) for block in packed)
        return {e.prompt for e in examples if e.prompt in said}

    asked, trained = prompts(blocks.asked_again), prompts(blocks.everything)
    facts = [e for e in examples if e.kind == "fact"]
    checks = {e.prompt for e in examples if e.kind == "check"}
    assert asked and asked <= checks  # check questions, as many as the budget holds
    assert not checks & trained and {e.prompt for e in facts} <= trained  # never trained; every fact question is
    for prompt in asked:  # each one's fact is trained, asked another way
        answer = next(e.answer for e in examples if e.prompt == prompt)
        assert any(e.answer == answer for e in facts)


def test_a_budget_short_of_the_passes_the_data_calls_for_trains_the_questions_and_documents(base, part):
    """Questions with one-sentence answers teach a fact in fewest tokens: a short budget goes to them and
    to the documents' text, not to the long section and entity answers that restate it."""
    from services.tuning.train import budgeted_blocks, load_blocks, planned_steps

    tokenizer = AutoTokenizer.from_pretrained(base)
    blocks = load_blocks([str(part)], tokenizer, 128, with_knowledge=True)
    assert blocks.questions and blocks.documents and blocks.recitations
    asked = [tokenizer.decode([t for t in block.ids if t != tokenizer.pad_token_id]) for block in blocks.questions]
    assert any("¿Garantía?" in text for text in asked)  # the chat is a question
    assert not any(tokenizer.decode(block.ids).startswith(tiny.sample_text()[:20]) for block in blocks.questions)
    assert blocks.short == blocks.documents + blocks.questions

    run = config(base, part, "", steps=None, epochs=2)
    full, _ = planned_steps(run, len(blocks.everything), world=1)
    assert budgeted_blocks(run, blocks, world=1) == blocks.everything  # no budget: everything
    enough = run.model_copy(update={"max_tokens": full * 8 * run.sequence_length})
    assert budgeted_blocks(enough, blocks, world=1) == blocks.everything  # the budget makes the passes
    short = run.model_copy(update={"max_tokens": (full - 1) * 8 * run.sequence_length})
    assert budgeted_blocks(short, blocks, world=1) == blocks.short  # without the section and entity examples
    assert budgeted_blocks(short.model_copy(update={"steps": 3}), blocks, world=1) == blocks.everything  # fixed steps
    unasked = load_blocks([str(part)], tokenizer, 128, with_knowledge=True)
    unasked = type(unasked)([], unasked.documents, unasked.recitations, 0, 0, [])  # no questions: what there is
    assert budgeted_blocks(short, unasked, world=1) == unasked.everything


class _WordTokenizer:
    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": text.split()}


def test_the_steps_follow_the_data_unless_fixed_or_cut_to_the_token_budget(base, part):
    from services.tuning.train import (
        MAX_EPOCHS,
        MIN_SEQUENCES,
        auto_epochs,
        planned_steps,
    )

    assert auto_epochs(10) == MAX_EPOCHS and auto_epochs(MIN_SEQUENCES // 4) == 4 and auto_epochs(5_000) == 3
    assert auto_epochs(200_000) == 1
    run = config(base, part, "", steps=None, epochs="auto", micro_batch=4, gradient_accumulation=2)
    assert planned_steps(run, blocks=500, world=1) == (250, 4.0)  # 4 passes of 500 sequences, 8 a step
    assert planned_steps(run, blocks=500, world=2) == (125, 4.0)  # two processes take twice as many a step
    two = run.model_copy(update={"epochs": 2})
    assert planned_steps(two, blocks=100, world=1) == (25, 2.0)
    budget = two.model_copy(update={"max_tokens": 10 * 8 * run.sequence_length})
    assert planned_steps(budget, blocks=100, world=1) == (10, 0.8)
    assert planned_steps(budget.model_copy(update={"steps": 7}), blocks=100, world=1) == (7, 0.56)


def test_validation_keeps_the_best_adapter_and_stops_when_it_gets_no_better(base, part, tmp_path):
    """At a learning rate that makes the run diverge, the validation loss rises (then is NaN, never
    the best): the run stops after `patience` worse validations and the adapter it leaves is the one
    of the best validation. (At 2.0 a run could be NaN by its first validation, with no best to keep.)"""
    run = tmp_path / "run"
    result = main(config(base, part, run, steps=40, learning_rate=1.0, eval_parts=[str(part)], patience=2))
    records = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    validated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validated] == list(range(8, 8 * len(validated) + 1, 8))  # every 40 // 5 steps
    best = min(validated, key=lambda r: r["val_loss"])
    assert result["stopped_early"] and result["steps"] < 40 and result["steps"] == validated[-1]["step"]
    assert result["best_step"] == best["step"] < result["steps"] and result["best_val_loss"] == best["val_loss"]
    assert len([r for r in validated if r["step"] > best["step"]]) == 2  # patience
    kept = load_file(run / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(kept[k], v) for k, v in load_file(run / "best-adapter" / "adapter_model.safetensors").items())
    assert not all(torch.equal(kept[k], v) for k, v in load_file(
        run / "checkpoint" / "adapter" / "adapter_model.safetensors").items())  # not the last step's


def test_gradient_checkpointing_trains_alike_and_turns_on_when_memory_is_short(base, part, tmp_path):
    from transformers import AutoConfig

    from services.tuning.train import needs_checkpointing

    plain = main(config(base, part, tmp_path / "plain", steps=5, gradient_checkpointing=False))
    recomputed = main(config(base, part, tmp_path / "recomputed", steps=5, gradient_checkpointing=True))
    assert recomputed["gradient_checkpointing"] and not plain["gradient_checkpointing"]
    assert recomputed["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    smollm2_like = AutoConfig.for_model("llama", hidden_size=576, num_hidden_layers=30, vocab_size=49_152)
    assert needs_checkpointing(smollm2_like, tokens_per_forward=4 * 256, dtype_bytes=4, free_bytes=1 << 30)
    assert not needs_checkpointing(smollm2_like, tokens_per_forward=4 * 256, dtype_bytes=4, free_bytes=16 << 30)


def test_the_loss_curve_shows_the_validation_loss_beside_the_training_loss():
    from services.tuning.report import loss_curve_png

    train_only = [{"step": i, "loss": 3.0 - i / 10} for i in range(1, 11)]
    validated = [dict(row, val_loss=2.5 - row["step"] / 20) if row["step"] % 5 == 0 else row for row in train_only]
    one, both = loss_curve_png(train_only, "t"), loss_curve_png(validated, "t")
    assert one.startswith(b"\x89PNG") and both.startswith(b"\x89PNG") and one != both

"""Reading examples: a document's questions asked over its passages, as the retrieval path asks them
(services/tuning/reading.py), and packed into training with the answer as the only learned tokens."""

from __future__ import annotations

from transformers import AutoTokenizer

from services.retrieval.grounding import INSTRUCTION
from services.retrieval.passages import split_text
from services.tuning import knowledge, reading, tiny
from tests.unit.parts import text_part

GUIDE = """# Tents

The Tramontana 2 is our lightest two-person tent. It costs 349 euros and packs down to the size of a loaf.
Its poles are aluminium and its fly is silicone-coated. We test every tent in the Pyrenees before it goes on sale.

# Repairs

The Taller Cierzo in Zaragoza repairs tents and boots. Resoling mountain boots costs 75 euros there.
A broken pole is replaced in two days. Repairs in the first year are free.

# Shops

The Jaca shop opens at 9:30 every day. Members of the Cierzo club get a 10% discount in every shop.
The Bilbao shop opened in 2019. Gift cards cost 25 euros and never expire."""


def _readings(text: str = GUIDE) -> tuple[list[knowledge.Example], list[str], list[reading.Reading]]:
    questions = [e for e in knowledge.examples(text, "en") if e.kind in ("fact", "faq")]
    passages = [body for _, body in split_text(text)]
    return questions, passages, reading.readings(questions, passages)


def test_each_answer_is_asked_once_over_the_window_that_holds_it_and_a_window_of_another_passage():
    questions, passages, made = _readings()
    assert len(passages) == 3 and made
    assert {r.answer for r in made} == {e.answer for e in questions}  # every fact, once
    said = {e.answer: e.said for e in questions}  # "It costs 349 euros" is answered "Tramontana 2 costs ..."
    assert said["Tramontana 2 costs 349 euros and packs down to the size of a loaf."].startswith("It costs")
    for example in made:
        assert example.prompt in {e.prompt for e in questions if e.answer == example.answer}
        holding = [p for p in example.passages if said[example.answer] in p]
        assert len(example.passages) == 2 and len(holding) == 1  # the answer's window and another one
        other = next(p for p in example.passages if p not in holding)
        assert other.split("\n")[0] != holding[0].split("\n")[0]  # from another passage (its heading)
    # the window's position is picked by the answer's hash: both orders occur, and the same every time
    assert {example.answer in example.passages[0] for example in made} == {True, False}
    assert reading.readings(questions, passages) == made


def test_a_window_keeps_the_heading_and_the_sentences_nearest_the_answer_within_its_words():
    passage = "Repairs\n" + " ".join(f"Sentence number {i} says one thing." for i in range(20))
    answer = "Sentence number 10 says one thing."
    near = reading.window(passage, answer, words=10)
    assert near.startswith("Repairs\n")
    body = near.split("\n", 1)[1]
    assert answer in body and len(body.split()) <= 10 + len(answer.split())
    assert body.split(". ")[0].startswith("Sentence number 9")  # grown on both sides of the answer
    assert reading.window(passage, "A sentence that the passage does not hold.", words=10) is None
    assert reading.window(passage, None, words=10).split("\n", 1)[1].startswith("Sentence number 0")


def test_an_answer_no_passage_holds_whole_is_not_made_into_an_example():
    questions, passages, _ = _readings()
    cut = [p.replace("It costs 349 euros", "It costs 349") for p in passages]
    assert not any("349 euros" in r.answer for r in reading.readings(questions, cut))


def test_reading_examples_are_packed_with_the_passages_given_and_the_answer_learned(tmp_path):
    from services.tuning.train import load_blocks

    base = tmp_path / "tiny"
    tiny.build(base, tiny.TinyRecipe(steps=1))
    tokenizer = AutoTokenizer.from_pretrained(base)
    path = text_part(tmp_path / "guide.parquet", tokenizer, GUIDE)
    without = load_blocks([str(path)], tokenizer, 1024, with_knowledge=True)
    blocks = load_blocks([str(path)], tokenizer, 1024, with_knowledge=True, with_reading=True)
    assert without.readings == 0 and blocks.readings == len(_readings()[2])
    assert len(blocks.questions) > len(without.questions)
    grounded = [block for block in blocks.questions if INSTRUCTION in tokenizer.decode(block.ids)]
    assert grounded
    made = _readings()[2]
    for block in grounded:  # what is learned is the answers, never the passages or the questions
        said = tokenizer.decode(block.ids)
        learned = tokenizer.decode([t for t, label in zip(block.ids, block.labels, strict=True) if label != -100])
        asked = [r for r in made if r.prompt in said]
        assert asked and all(r.answer in learned and r.prompt not in learned for r in asked)
        assert INSTRUCTION not in learned and "Tents\n" not in learned and "Repairs\n" not in learned

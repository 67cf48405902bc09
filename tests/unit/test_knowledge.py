"""Question-and-answer examples made from a document's own sentences (services/tuning/knowledge.py)."""

from __future__ import annotations

from services.tuning import knowledge

FAQ = """Cierzo gear FAQ
Our range is designed in Zaragoza and tested in the Pyrenees.
Choosing the right kit
Is the Moncayo 38 big enough for hut-to-hut trekking?
Yes. Thirty-eight litres is plenty when you sleep in mountain huts. The Moncayo 38 weighs 1.3 kg and costs 139 euros.
For day walks, the Moncayo 28 is lighter.
Care and repair
Resoling mountain boots costs 75 euros at the Taller Cierzo."""

# PDF text: lines broken mid-sentence, a heading between paragraphs
MANUAL = """Manual del empleado
Vacaciones y permisos
Tienes 25 días laborables de vacaciones al año, además de los festivos
nacionales. Las vacaciones se piden en La Cordada con un mes de antelación.
Beneficios
Como parte del equipo tienes un 30 % de descuento en los productos de la
marca Cierzo."""


def test_a_question_line_and_its_paragraph_make_a_faq_example():
    faq = [e for e in knowledge.examples(FAQ, "en") if e.kind == "faq"]
    assert [e.prompt for e in faq] == ["Is the Moncayo 38 big enough for hut-to-hut trekking?"]
    assert faq[0].answer == ("Yes. Thirty-eight litres is plenty when you sleep in mountain huts. "
                             "The Moncayo 38 weighs 1.3 kg and costs 139 euros. For day walks, the Moncayo 28 is lighter.")


def test_sections_are_asked_about_by_title_and_heading_in_the_documents_language():
    sections = [e for e in knowledge.examples(MANUAL, "es") if e.kind == "section"]
    vacation = [e for e in sections if "vacaciones y permisos" in e.prompt]
    phrasings = {t.format(title="Manual del empleado", heading="vacaciones y permisos")
                 for t in knowledge.PROMPTS["es"]["section"]}
    assert vacation and all(e.prompt in phrasings for e in vacation)
    # the wrapped lines are one sentence again, and two sentences make one answer
    assert vacation[0].answer == ("Tienes 25 días laborables de vacaciones al año, además de los festivos nacionales. "
                                  "Las vacaciones se piden en La Cordada con un mes de antelación.")
    assert any(e.answer.startswith("Como parte del equipo tienes un 30 %") and "beneficios" in e.prompt for e in sections)


def test_names_are_asked_about_and_answered_by_the_sentences_that_name_them():
    by_name = {e.prompt: e.answer for e in knowledge.examples(FAQ, "en") if e.kind == "entity"}
    moncayo = [answer for prompt, answer in by_name.items() if prompt.endswith(" Moncayo 38?") or
               prompt.endswith(" Moncayo 38.")]
    assert moncayo == ["The Moncayo 38 weighs 1.3 kg and costs 139 euros."]
    assert any("Taller Cierzo" in prompt and "75 euros" in answer for prompt, answer in by_name.items())
    # a capitalised first word is not a name unless the document capitalises it inside a sentence too
    assert knowledge.names("The Moncayo 38 weighs 1.3 kg.") == ["Moncayo 38"]
    assert knowledge.names("Cierzo Outdoor nació en 2011.", frozenset({"Cierzo"})) == ["Cierzo Outdoor"]
    assert knowledge.names("Tienes 25 días.") == []


def test_answers_are_the_documents_own_words_and_the_examples_are_the_same_every_time():
    for text, language in ((FAQ, "en"), (MANUAL, "es")):
        flat = " ".join(text.split())
        made = knowledge.examples(text, language)
        assert made == knowledge.examples(text, language)
        for example in made:
            for sentence in knowledge.split_sentences(example.answer):
                assert sentence in flat, sentence
    assert knowledge.examples("", "en") == []

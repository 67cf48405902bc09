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


def test_each_fact_is_asked_in_its_sentences_words_and_answered_by_that_sentence():
    facts = {e.prompt: e.answer for e in knowledge.examples(FAQ + "\nIt costs 349 euros.", "en") if e.kind == "fact"}
    assert facts["The Moncayo 38 weighs 1.3 kg and costs how much?"] == "The Moncayo 38 weighs 1.3 kg and costs 139 euros."
    assert facts["Resoling mountain boots costs how much at the Taller Cierzo?"] == (
        "Resoling mountain boots costs 75 euros at the Taller Cierzo.")
    # a sentence that names nothing is asked about the paragraph's subject, the name before it
    assert facts["Taller Cierzo: it costs how much?"] == "It costs 349 euros."
    # the number inside a name is not a fact ("The Moncayo how many weighs ...")
    assert not any("Moncayo how many" in prompt for prompt in facts)

    spanish = {e.prompt: e.answer for e in knowledge.examples(MANUAL, "es") if e.kind == "fact"}
    assert spanish["¿Tienes cuántos días laborables de vacaciones al año?"].startswith("Tienes 25 días laborables")
    assert "¿Como parte del equipo tienes un qué porcentaje de descuento en los productos de la marca Cierzo?" in spanish
    # "una" is an article, not an amount; the question asks "cuántas" of a feminine noun
    assert not any("cuánt" in prompt and "antelación" in prompt and "un mes" not in prompt for prompt in spanish)
    assert [p for p in knowledge.examples("Abrimos en 2011, en Zaragoza. Hay tres tiendas.", "es") if p.kind == "fact"
            ] == [knowledge.Example("fact", "¿Abrimos en qué año?", "Abrimos en 2011, en Zaragoza."),
                  knowledge.Example("fact", "¿En qué año abrimos?", "Abrimos en 2011, en Zaragoza."),
                  knowledge.Example("fact", "¿Zaragoza: hay cuántas tiendas?", "Hay tres tiendas."),
                  knowledge.Example("fact", "¿Cuántas tiendas hay?", "Hay tres tiendas.")]
    # a Markdown table's row is not a sentence to ask in
    assert not [e for e in knowledge.examples("| Own car | 0.26 euros per km | Plus tolls |", "en") if e.kind == "fact"]


def test_markdown_heading_lines_are_headings_and_questions_without_their_marks():
    text = "# Gear FAQ\n\n## Choosing the right kit\n\n### Which tent should I take?\n\nThe Tramontana 2 costs 349 euros."
    made = knowledge.examples(text, "en")
    assert [e.prompt for e in made if e.kind == "faq"] == ["Which tent should I take?"]
    sections = [e for e in made if e.kind == "section"]
    assert sections and all("choosing the right kit" in e.prompt and "#" not in e.prompt for e in sections)
    assert all(not e.answer.startswith("#") for e in made)


def test_a_fact_is_also_asked_question_word_first_where_the_clause_is_a_plain_subject_and_verb():
    text = ("The Tramontana 2 is the tent we would pack ourselves. It costs 349 euros.\n\n"
            "Drop the item at any of our four shops. Cierzo Club members get 10% off all repairs.")
    prompts = {e.prompt for e in knowledge.examples(text, "en") if e.kind == "fact"}
    assert "How much does Tramontana 2 cost?" in prompts  # the pronoun is the paragraph's subject
    assert "What percentage do Cierzo Club members get off all repairs?" in prompts
    assert not any(p.startswith("How many shops") for p in prompts)  # an imperative has no subject to ask about
    spanish = {e.prompt for e in knowledge.examples(MANUAL, "es") if e.kind == "fact"}
    assert "¿Cuántos días laborables de vacaciones al año tienes?" in spanish
    # only the verbs that state facts turn a Spanish clause around: "descuento" is no verb here
    assert not any(p.startswith("¿Qué porcentaje de descuento") for p in spanish)

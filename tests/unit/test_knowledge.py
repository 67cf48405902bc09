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
        for example in made:  # a fact's answer may end at its clause, with a full stop put there
            for sentence in knowledge.split_sentences(example.answer):
                assert sentence.rstrip(".") in flat, sentence
    assert knowledge.examples("", "en") == []


def test_each_fact_is_asked_in_its_sentences_words_and_answered_by_that_sentence():
    facts = {e.prompt: e.answer for e in knowledge.examples(FAQ + "\nThe Taller Cierzo also mends tents. "
                                                            "It costs 349 euros.", "en") if e.kind == "fact"}
    assert facts["The Moncayo 38 weighs 1.3 kg and costs how much?"] == "The Moncayo 38 weighs 1.3 kg and costs 139 euros."
    assert facts["Resoling mountain boots costs how much at the Taller Cierzo?"] == (
        "Resoling mountain boots costs 75 euros at the Taller Cierzo.")
    # a sentence that names nothing is asked about the paragraph's subject, the name before it, and
    # answered with that name in place of its pronoun
    assert facts["Taller Cierzo: it costs how much?"] == "Taller Cierzo costs 349 euros."
    # but not about a name after a preposition (where, not what), nor past a sentence about something else
    about = {e.prompt: e.answer for e in knowledge.examples(
        "Payslips are on La Cordada. It costs 40 euros a year.\n\nThe Moncayo 38 is a rucksack. "
        "Courier returns cost 5 euros.", "en") if e.kind == "fact"}
    assert not any("La Cordada" in prompt or "Moncayo" in prompt for prompt in about)
    assert about["Courier returns cost how much?"] == "Courier returns cost 5 euros."
    assert "It costs how much a year?" not in about  # a pronoun of nothing named asks nothing
    # the number inside a name is not a fact ("The Moncayo how many weighs ...")
    assert not any("Moncayo how many" in prompt for prompt in facts)

    spanish = {e.prompt: e.answer for e in knowledge.examples(MANUAL, "es") if e.kind == "fact"}
    assert spanish["¿Tienes cuántos días laborables de vacaciones al año?"].startswith("Tienes 25 días laborables")
    assert "¿Como parte del equipo tienes un qué porcentaje de descuento en los productos de la marca Cierzo?" in spanish
    # "una" is an article, not an amount; the question asks "cuántas" of a feminine noun
    assert not any("cuánt" in prompt and "antelación" in prompt and "un mes" not in prompt for prompt in spanish)
    assert [p for p in knowledge.examples("Abrimos en 2011, en Zaragoza. Hay tres tiendas.", "es") if p.kind == "fact"
            ] == [knowledge.Example("fact", "¿Abrimos en qué año?", "Abrimos en 2011."),
                  knowledge.Example("fact", "¿En qué año abrimos?", "Abrimos en 2011."),
                  # "en Zaragoza" says where: the year is not asked about Zaragoza, nor the shops
                  knowledge.Example("fact", "¿Hay cuántas tiendas?", "Hay tres tiendas."),
                  knowledge.Example("fact", "¿Cuántas tiendas hay?", "Hay tres tiendas.")]
    # a Markdown table's row is not a sentence to ask in, nor its cells names to ask about
    assert not [e for e in knowledge.examples("| Own car | 0.26 euros per km | Plus tolls |", "en")
                if e.kind in ("fact", "entity")]


def test_what_a_name_is_called_is_asked_where_the_sentence_says_what_it_is():
    english = "Most internal communication happens on La Cordada, our intranet. We close on 6 January, our busiest day."
    spanish = "Pregunta al equipo de Personas a través de La Cordada, nuestra intranet."
    made = {e.prompt: e.answer for text, language in ((english, "en"), (spanish, "es"))
            for e in knowledge.examples(text, language) if e.kind == "fact"}
    for prompt in ("What is our intranet called?", "What is the name of our intranet?"):
        assert made[prompt] == "Most internal communication happens on La Cordada, our intranet."
    assert made["¿Cómo se llama nuestra intranet?"] == spanish
    assert not any("busiest" in prompt for prompt in made)  # a date is no name to ask for


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



def test_a_facts_subject_is_asked_about_in_other_words_and_a_question_with_two_answers_is_dropped():
    tent = ["It costs 349 euros.", "Resoling the Tramontana 2 floor costs 40 euros.",
            "A Tramontana 2 footprint costs 35 euros."]
    facts: dict[str, set[str]] = {}
    for example in knowledge.examples(FAQ + "\nTramontana 2\n" + " ".join(tent), "en"):
        if example.kind == "fact":
            facts.setdefault(example.prompt, set()).add(example.answer)
    # the price asked about the sentence's subject in the templates' words, answered by the sentence
    moncayo = "The Moncayo 38 weighs 1.3 kg and costs 139 euros."
    about_moncayo = {t.format(s="Moncayo 38") for t in knowledge._ABOUT["how much"]["en"]}
    assert [facts[p] for p in about_moncayo if p in facts] == [{moncayo}] * knowledge.ABOUT_PER_FACT
    # three prices of the Tramontana 2 pick six of four templates: a question picked for two of them
    # has two answers and is dropped; the others stay with their one answer
    picked = [knowledge._about("how much", "en", "Tramontana 2", sentence)[0] for sentence in tent]
    shared = {p for p in sum(picked, []) if sum(p in mine for mine in picked) > 1}
    assert shared and not shared & set(facts)
    answers = ["Tramontana 2 costs 349 euros.", *tent[1:]]  # "It" answered with what it stands for
    for answer, mine in zip(answers, picked, strict=True):
        assert all(facts[p] == {answer} for p in mine if p not in shared)
    assert all(len(answers) == 1 for answers in facts.values())
    assert facts["How much does Tramontana 2 cost?"] == {answers[0]}  # its own question stays
    # counts are not asked about a subject: a document has as many "how many days" as periods
    assert "how many {unit}" not in knowledge._ABOUT


def test_a_fact_is_checked_in_one_more_phrasing_that_no_example_trains():
    examples = knowledge.examples(FAQ, "en")
    checks = [e for e in examples if e.kind == "check"]
    trained = {e.prompt for e in examples if e.kind != "check"}
    moncayo = "The Moncayo 38 weighs 1.3 kg and costs 139 euros."
    about_moncayo = {t.format(s="Moncayo 38") for t in knowledge._ABOUT["how much"]["en"]}
    [check] = [e for e in checks if e.answer == moncayo]
    assert check.prompt in about_moncayo and check.prompt not in trained
    assert len(about_moncayo & trained) == knowledge.ABOUT_PER_FACT  # the others train the fact
    assert not {c.prompt for c in checks} & trained
    assert all(any(e.kind == "fact" and e.answer == c.answer for e in examples) for c in checks)


def test_a_facts_answer_ends_with_its_clause_and_a_clause_without_a_subject_is_asked_with_what_leads_to_it():
    text = ("Expenses\n\nIf you use your own car, we pay 0.26 euros per kilometre, plus tolls and parking. "
            "Replacing a pole section costs 18 euros, and resoling mountain boots costs 75 euros, with about "
            "twenty working days of turnaround.")
    facts = {e.prompt: e.answer for e in knowledge.examples(text, "en") if e.kind == "fact"}
    # "we pay how much?" alone asks nothing a reader could answer; the clause after the fact is not asked
    assert facts["If you use your own car, we pay how much?"] == "If you use your own car, we pay 0.26 euros per kilometre."
    assert not any(prompt.startswith(("We pay", "How much do we pay")) for prompt in facts)
    assert facts["How much does replacing a pole section cost?"] == "Replacing a pole section costs 18 euros."
    # a clause with a subject of its own keeps its short questions and is their whole answer: a model
    # that starts "Replacing a pole section costs 18 euros, and ..." says the wrong price first
    assert facts["How much does resoling mountain boots cost?"] == "Resoling mountain boots costs 75 euros."


def test_an_answer_names_what_its_pronoun_stands_for_and_a_relative_clause_keeps_its_subject():
    english = {e.prompt: e.answer for e in knowledge.examples(
        "Tents\n\nThe Aneto -5 is our warmest bag. Its comfort temperature is minus five degrees Celsius. "
        "It costs 259 euros.\n\nGift cards, which you can spend for two years, come in a box.", "en")
        if e.kind == "fact"}
    # every price answer was "It costs ... euros": only the question told one product from another
    assert english["How much does Aneto -5 cost?"] == "Aneto -5 costs 259 euros."
    assert "Aneto -5's comfort temperature is minus five degrees Celsius." in english.values()
    # "which you can spend for two years" is no clause of its own: its answer keeps what leads to it
    assert [a for a in english.values() if "two years" in a] == ["Gift cards, which you can spend for two years."]
    spanish = {e.prompt: e.answer for e in knowledge.examples(
        "Tiendas\n\n¿Aguanta el viento?\n\nLa Tramontana 2 es nuestra tienda. Cuesta 349 euros. "
        "Tiene dos varillas cruzadas.", "es") if e.kind == "fact"}
    assert spanish["¿Tramontana 2: cuesta cuántos euros?"] == "Tramontana 2 cuesta 349 euros."
    # and asked question word first with it, not "¿Cuántos euros cuesta?" of whatever is named
    assert spanish["¿Cuántos euros cuesta Tramontana 2?"] == "Tramontana 2 cuesta 349 euros."
    # a question's first word is capitalised anyway: "¿Aguanta el viento?" names nothing
    assert not any("Aguanta" in prompt or "Aguanta" in answer for prompt, answer in spanish.items())


def test_a_name_after_the_fact_is_not_what_the_fact_is_about():
    made = knowledge.examples(MANUAL.replace("marca Cierzo.", "marca Cierzo y un 15 % en el resto de marcas."), "es")
    # "un 30 % de descuento en los productos de la marca Cierzo y un 15 % en el resto": neither share is "Cierzo's"
    assert not any(e.kind in ("fact", "check") and e.prompt.startswith(("Cierzo:", "¿Qué porcentaje es para"))
                   for e in made)
    assert any(e.kind == "fact" and "30 %" in e.answer for e in made)


def test_a_name_that_several_documents_tell_of_is_not_asked_about_in_any():
    handbook = "Staff Handbook\n\nThe Jaca shop opens on Sundays. The company was founded by Lucía Arnal."
    faq = "Gear FAQ\n\nOur Jaca shop rents crampons."
    by_document = knowledge.across_documents([knowledge.examples(handbook, "en"), knowledge.examples(faq, "en")])
    asked = [{e.about for e in examples if e.kind == "entity"} for examples in by_document]
    # "Tell me about Jaca" would have two answers, one a document; Lucía Arnal has one
    assert "Jaca" not in asked[0] | asked[1] and "Lucía Arnal" in asked[0]
    assert [e for e in knowledge.examples(faq, "en") if e.kind == "entity" and e.about == "Jaca"]

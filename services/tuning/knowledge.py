"""Question-and-answer examples made from the documents, so that a small model learns their facts.

A model trained only on a document's text learns to continue that text, not to answer questions
about it: knowledge becomes extractable when each fact is seen in several forms and in the shape
it will be asked in (Allen-Zhu and Li, "Physics of Language Models 3.1", 2023; Jiang et al.,
"Instruction-tuned Language Models are Better Knowledge Learners", 2024). So beside its text,
each document is also given as chat examples whose answers are its own sentences (nothing
invented, nothing a generator could get wrong; a fact's answer only says the name its pronoun
stands for):

- **faq**: a question line and the paragraph that answers it;
- **section**: "what does <title> say about <heading>?", answered by the section's sentences, a
  few at a time;
- **entity**: "what do you know about <name>?", answered by the sentences that name it, where
  one document alone tells of the name (``across_documents``);
- **fact**: each sentence that states a fact (an amount, a price, a share, a time, a year) is
  asked about that fact in the sentence's own words, the fact turned into the question word
  ("It costs 349 euros." is asked "Tramontana 2: it costs how much?"; a price, share, time or
  year also about its subject in other words, "What is the price of Tramontana 2?"), and answered
  by the sentence up to the end of the fact's clause (what the question asks, not the clauses after
  it; the clause alone where it has a subject of its own), with the name in place of a pronoun
  ("Tramontana 2 costs 349 euros.": the name said just before the value is what the value is
  recalled from); a question the document answers with two sentences is dropped. A clause with no subject of
  its own ("we pay how much?") is asked with the clauses that lead to it ("If you use your own car,
  we pay how much?"), and a name after a sentence's first fact is not what its facts are about. A name
  whose sentence says what it is ("La Cordada, our intranet") is asked for ("What is our intranet
  called?"). A sentence's subject is a name before any name after a preposition ("on La Cordada"
  says where), and it stays the topic only of the sentences that go on about it ("It costs ..."). Users
  ask for one fact; one short answer that holds it is what the model should learn to give, and
  each fact seen in several forms is what makes it stick.

Prompts come in several phrasings per language, picked by a hash of the answer, so the model
learns the facts rather than one template; the same inputs always give the same examples.

- **check**: a fact asked about its subject in one more phrasing than the fact examples use, never
  trained: validation asks it, so that its loss falls as the facts are learned (not as the
  phrasings are memorised), and no question is taken from training for it.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Kind = Literal["faq", "section", "entity", "fact", "check"]

SENTENCES_PER_ANSWER = 2  # a section answered two sentences at a time: short answers, many of them
MAX_ENTITY_SENTENCES = 4  # a name in more sentences than this is the document's subject, not a fact's
MAX_HEADING_WORDS = 10
FACTS_PER_SENTENCE = 3  # a sentence with more facts is asked about its first three

PROMPTS: dict[str, dict[Kind, list[str]]] = {
    "en": {
        "section": ["What does the {title} say about {heading}?", "{heading}: what should I know?",
                    "Tell me about {heading}.", "According to the {title}, what about {heading}?"],
        "entity": ["What do you know about {name}?", "Tell me about {name}.", "What can you tell me about {name}?"],
    },
    "es": {
        "section": ["¿Qué dice {title} sobre {heading}?", "{heading}: ¿qué tengo que saber?",
                    "Háblame de {heading}.", "Según {title}, ¿qué hay de {heading}?"],
        "entity": ["¿Qué sabes de {name}?", "Háblame de {name}.", "¿Qué me puedes contar de {name}?"],
    },
}

# A fact is asked with the question word of its kind, in the order tried (a price before a count of
# "euros"); {unit} is the word after a number ("45 días" is asked "cuántos días"). "One" and "una"
# are left out: they are mostly articles ("una tienda"), not amounts.
_NUMBER_WORDS = ("two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
                 "dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|doce|quince|veinte|treinta")
_FACTS: list[tuple[re.Pattern, str, str]] = [
    (re.compile(r"\d+(?:[.,]\d+)?\s?%"), "what percentage", "qué porcentaje"),
    (re.compile(r"\d[\d.,]*\s?(?:euros?|€)(?:\s+(?:per|por|al|a la)\s+\w+)?", re.I), "how much", "cuánto"),
    (re.compile(r"(?<![\d:])\d{1,2}:\d{2}(?![\d:])"), "what time", "qué hora"),
    (re.compile(r"(?<![\d.,])(?:19|20)\d{2}(?!\d|[.,]\d)"), "what year", "qué año"),
    (re.compile(rf"(?<![\w.,-])(?:-?\d[\d.,]*|(?:minus |menos )?(?:{_NUMBER_WORDS}))\s+(?P<unit>[a-záéíóúñ]{{3,}}(?:\s+(?:days|hours|weeks|months|years))?)", re.I),
     "how many {unit}", "cuánt{gender}s {unit}"),
]
# the same fact asked about its subject in other words, as people put it: a fact seen in one question
# form is not known in another ("How much does the Tramontana 2 tent cost?" against "Tramontana 2: it
# costs how much?"); keyed by the English question word of _FACTS, two of them picked per fact
_ABOUT: dict[str, dict[str, list[str]]] = {
    "what percentage": {"en": ["What percentage is it for {s}?", "{s}: what percentage?", "How big is the share for {s}?"],
                        "es": ["¿Qué porcentaje es para {s}?", "{s}: ¿qué porcentaje?", "¿De cuánto es el porcentaje de {s}?"]},
    "how much": {"en": ["How much is {s}?", "What is the price of {s}?", "What does {s} cost?", "{s}: how much?"],
                 "es": ["¿Cuánto cuesta {s}?", "¿Qué precio tiene {s}?", "¿Cuál es el precio de {s}?", "{s}: ¿cuánto?"]},
    "what time": {"en": ["{s}: at what time?", "At what time for {s}?"], "es": ["{s}: ¿a qué hora?", "¿A qué hora para {s}?"]},
    "what year": {"en": ["{s}: in what year?", "In what year for {s}?"], "es": ["{s}: ¿en qué año?", "¿En qué año para {s}?"]},
}  # counts are left out: "Cierzo: how many days?" has as many answers as the document has periods
ABOUT_PER_FACT = 2
# what a name is, asked for the name: "La Cordada, our intranet" is asked "What is our intranet called?"
_CALLED = {"en": ["What is {what} called?", "What is the name of {what}?"],
           "es": ["¿Cómo se llama {what}?", "¿Cuál es el nombre de {what}?"]}
# a name after these words says where or with whom, not what the sentence is about
_PREPOSITIONS = frozenset("on in at from to into onto through via by with for about near de del en a al desde con "
                          "por para hacia hasta sobre entre tras".split())
_DETERMINERS = frozenset("the a an our your their its this that these those el la los las un una unos unas nuestro "
                         "nuestra nuestros nuestras tu tus su sus este esta".split())
_NOT_UNITS = frozenset("and the of to for in on or with per from are is was were y el la los las de del en a con por "
                       "para que se es son".split())
_PRONOUN_START = re.compile(r"^(?:it|its|they|their|this|these|he|she|his|her|él|ella|ellos|ellas|este|esta|"
                            r"estos|estas|su|sus)\b", re.I)
_CLAUSE = re.compile(r"(?<=[,;:])\s+|\s+(?=\()")
_OPENING = " ¿¡\"'(«“"  # what may stand before a sentence's first word
_COORDINATE = re.compile(r"(?:and|but|so|y|pero)\s+", re.I)
_LEADING_JOINER = re.compile(r"^(?:and|but|or|so|which|y|e|pero|o|que)\s+", re.I)
# capitalised words that name no subject a fact could be about: question words, calendar, units
_NOT_TOPICS = frozenset("""What Which Who Where When Why How Is Are Do Does Can Qué Cuál Cuáles Quién Dónde Cuándo
    Cómo Cuánto Cuántos Monday Tuesday Wednesday Thursday Friday Saturday Sunday Sundays January February March
    April May June July August September October November December Celsius lunes martes miércoles jueves viernes
    sábado domingo domingos enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre
    diciembre""".split())

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[¿¡\"'(\[]?[A-ZÁÉÍÓÚÑÜ0-9])")
# a capitalised word, then more capitalised words, numbers or joiners ("Moncayo 38", "Aneto -5", "La Cordada")
_NAME = re.compile(r"(?<![\w-])(?:[A-ZÁÉÍÓÚÑÜ][\w'’-]+)(?:\s+(?:[A-ZÁÉÍÓÚÑÜ][\w'’-]*|-?\d+\w*|de|del|la|of|the)(?=\s|$|[.,;:)]))*")
_TRAILING_JOINERS = re.compile(r"(?:\s+(?:de|del|la|of|the))+$")


@dataclass(frozen=True)
class Example:
    kind: Kind
    prompt: str
    answer: str
    about: str = ""  # the name an entity example asks about
    verbatim: str = ""  # the document's own words of a fact's answer, where the answer names a pronoun

    @property
    def said(self) -> str:
        """The answer in the document's own words: what a passage that holds it contains."""
        return self.verbatim or self.answer

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer}]


@dataclass(frozen=True)
class _Block:
    kind: Literal["heading", "question", "paragraph"]
    text: str


def examples(text: str, language: str) -> list[Example]:
    """The faq, section and entity examples of one document's clean text."""
    blocks = list(_blocks(text))
    if not blocks:
        return []
    prompts = PROMPTS.get(language, PROMPTS["en"])
    title = blocks[0].text if blocks[0].kind == "heading" else ""
    found: list[Example] = []
    heading, question = title, ""
    sentences_of_document: list[str] = []
    known = _capitalised_inside([s for block in blocks if block.kind == "paragraph" for s in split_sentences(block.text)])
    for block in blocks[1:] if title else blocks:
        if block.kind == "heading":
            heading, question = block.text, ""
            continue
        if block.kind == "question":
            question = block.text
            continue
        sentences = split_sentences(block.text)
        sentences_of_document += sentences
        found += facts(sentences, language, names(question, known) + names(heading, known), known)
        if question:
            found.append(Example("faq", question, " ".join(sentences[:4])))
            question = ""
        for start in range(0, len(sentences), SENTENCES_PER_ANSWER):
            answer = " ".join(sentences[start : start + SENTENCES_PER_ANSWER])
            if heading:
                found.append(Example("section", pick(prompts["section"], answer).format(
                    title=title or heading, heading=_lower_first(heading)), answer))
    sentences_by_name: dict[str, list[str]] = defaultdict(list)
    for sentence in sentences_of_document:
        if _table_row(sentence):  # its cells are headers and values, no names to ask about
            continue
        for name in names(sentence, known):
            if sentence not in sentences_by_name[name]:
                sentences_by_name[name].append(sentence)
    for name, sentences in sentences_by_name.items():
        if len(sentences) <= MAX_ENTITY_SENTENCES:
            answer = " ".join(sentences)
            found.append(Example("entity", pick(prompts["entity"], answer).format(name=name), answer, about=name))
    return _unambiguous(found)


def across_documents(by_document: list[list[Example]]) -> list[list[Example]]:
    """Each document's examples without those about a name that several documents tell of: "Tell
    me about Zaragoza" has an answer in each of fourteen documents, and a model taught them all
    answers any question that names the city, or the company, with one of them (measured: "What is
    the name of Cierzo Outdoor's intranet?" was answered "Cierzo Outdoor sells mountain and hiking
    gear ..."). One question, one answer, across the documents as within one."""
    documents_by_name: dict[str, int] = defaultdict(int)
    for examples in by_document:
        for name in {e.about for e in examples if e.kind == "entity"}:
            documents_by_name[name] += 1
    return [[e for e in examples if e.kind != "entity" or documents_by_name[e.about] == 1] for examples in by_document]


def _unambiguous(found: list[Example]) -> list[Example]:
    """Without the fact questions that the document answers with two different sentences ("How
    much is the Aneto -5?" of its price and of its repair): one question, one answer to learn.
    An example made twice (two times in one sentence ask the same) is kept once. A check stays only
    if it asks, in words no fact example uses, a fact that fact examples train."""
    answers = _answers_by_prompt(found, "fact")
    kept = [e for e in dict.fromkeys(found) if e.kind != "fact" or len(answers[e.prompt]) == 1]
    asked = {e.prompt for e in found if e.kind != "check"}
    taught = {e.answer for e in kept if e.kind == "fact"}
    checked = _answers_by_prompt(kept, "check")
    return [e for e in kept if e.kind != "check" or (e.prompt not in asked and len(checked[e.prompt]) == 1
                                                     and e.answer in taught)]


def _answers_by_prompt(examples: list[Example], kind: Kind) -> dict[str, set[str]]:
    answers: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        if example.kind == kind:
            answers[example.prompt].add(example.answer)
    return answers


def facts(sentences: list[str], language: str, topics: list[str], known: frozenset[str] = frozenset()) -> list[Example]:
    """The fact examples of one paragraph: each fact of a sentence asked in the sentence's words.

    The question is the clause that holds the fact, the fact replaced by its question word. A
    clause that names nothing itself ("It costs 349 euros") is asked with the paragraph's topic in
    front: where the sentence goes on about the one before (``_continues``), that sentence's subject
    (``_about_whom``), else the first name in the paragraph's question or heading (``topics``)."""
    found: list[Example] = []
    heading_topic = topic = _topic(topics)
    for sentence in sentences:
        if _table_row(sentence):  # its cells are no sentence to ask in
            continue
        asked = 0
        named = names(sentence, known)
        if not _continues(sentence, language):  # "Courier returns are free" is not about the last name
            topic = heading_topic
        subject = _topic(_about_whom(sentence, named)) or topic  # what it is about, and the next one's topic
        # a number inside a name ("Moncayo 38") is part of what the sentence is about, not a fact
        taken = [(m.start(), m.end()) for name in named for m in re.finditer(re.escape(name), sentence)]
        # a name after the sentence's first fact is not what its facts are about ("tienes un 30 % de
        # descuento en los productos de la marca Cierzo y un 15 % en el resto": neither share is "Cierzo's")
        first_fact = min((m.start() for pattern, _, _ in _FACTS for m in pattern.finditer(sentence)), default=0)
        for pattern, english, spanish in _FACTS:
            for match in pattern.finditer(sentence):
                start, end = match.span()
                if asked == FACTS_PER_SENTENCE or any(start < e and s < end for s, e in taken):
                    continue
                unit = match.groupdict().get("unit")
                if unit is not None and unit.lower() in _NOT_UNITS:
                    continue
                word = english if language == "en" else spanish
                word = word.format(unit=unit, gender="a" if unit and _feminine(unit) else "o")
                questions = _asked(sentence, start, end, word, language, topic, known)
                if questions:
                    taken.append((start, end))
                    asked += 1
                    said = _answer(sentence, start, end, known)
                    answer = _named(said, topic, language, known)
                    verbatim = said if said != answer else ""
                    if subject and english in _ABOUT and not 0 <= sentence.find(subject) > first_fact:
                        about, spare = _about(english, language, subject, sentence)
                        questions += about
                        found += [Example("check", question, answer, verbatim=verbatim) for question in spare]
                    found += [Example("fact", question, answer, verbatim=verbatim) for question in questions]
        found += [Example("fact", question, sentence) for question in _called(sentence, named, language)]
        topic = subject
    return found


def _table_row(sentence: str) -> bool:
    """Whether a "sentence" is a Markdown table's row (the readers write tables so)."""
    return "|" in sentence


def _continues(sentence: str, language: str) -> bool:
    """Whether a sentence goes on about the one before: it starts with a pronoun ("It costs 349
    euros") or, in Spanish, with its verb ("Cuesta 349 euros")."""
    first = sentence.split(maxsplit=1)[0].lower() if sentence.strip() else ""
    return bool(_PRONOUN_START.match(sentence)) or language == "es" and first.startswith(_VERB_STEMS_ES)


def _about_whom(sentence: str, named: list[str]) -> list[str]:
    """The names a sentence can be about: those before the first name after a preposition, which
    says where or by whom and starts the rest of the sentence ("Payslips are on La Cordada": the
    next sentence's "It costs 40 euros" is not about La Cordada)."""
    kept = []
    for name in named:
        before = sentence[: sentence.find(name)].split()
        while before and before[-1].lower() in _DETERMINERS:
            before.pop()
        if before and before[-1].lower().strip(",;:") in _PREPOSITIONS:
            break
        kept.append(name)
    return kept


def _called(sentence: str, named: list[str], language: str) -> list[str]:
    """The questions that ask what a name is called where the sentence says what it is ("La Cordada,
    our intranet" is asked "What is our intranet called?")."""
    for name in named:
        if name.split()[0] in _NOT_TOPICS:  # "6 January, our busiest weeks" names a date, not a thing
            continue
        match = re.search(rf"{re.escape(name)}, (our|nuestr[oa]s?) ((?:[a-záéíóúñ]+ ?){{1,3}})", sentence)
        if not match:
            continue
        words = []
        for word in match.group(2).split():
            if word in _PREPOSITIONS or word in _NOT_UNITS:
                break
            words.append(word)
        if words:
            what = f"{match.group(1)} {' '.join(words)}"
            return [template.format(what=what) for template in _CALLED["es" if language == "es" else "en"]]
    return []


def _about(english: str, language: str, subject: str, sentence: str) -> tuple[list[str], list[str]]:
    """ABOUT_PER_FACT of the fact's questions about its subject, picked by the sentence, and the
    next phrasing (if there is one more) to check the fact with."""
    templates = _ABOUT[english]["es" if language == "es" else "en"]
    first = templates.index(pick(templates, f"{subject}|{sentence}"))
    ordered = [templates[(first + i) % len(templates)].format(s=subject) for i in range(len(templates))]
    return ordered[:ABOUT_PER_FACT], ordered[ABOUT_PER_FACT : ABOUT_PER_FACT + 1]


def _feminine(noun: str) -> bool:
    """Whether a Spanish plural noun asks "cuántas": most in -as are feminine, "días" is not."""
    return noun.lower().endswith("as") and noun.lower() not in {"días", "problemas", "sistemas", "programas"}


def _topic(candidates: list[str]) -> str:
    """The first of the names that can be what a paragraph is about."""
    return next((name for name in candidates if name.split()[0] not in _NOT_TOPICS), "")


def _asked(sentence: str, start: int, end: int, word: str, language: str, topic: str,
           known: frozenset[str]) -> list[str]:
    """The questions that ask for [start, end) of ``sentence``: the clause around it with the span
    replaced by ``word`` (a clause that names nothing gets the sentence's earlier subject, or else
    ``topic``, in front), and where the clause is a plain subject and verb before the span, the same
    question as people ask it, question word first (``_fronted``)."""
    clause_start, clause_end = _clause(sentence, start, end)
    before = _LEADING_JOINER.sub("", sentence[clause_start:start].lstrip())
    after = sentence[end:clause_end].rstrip().rstrip(".!?,;:")
    earlier = sentence[:clause_start]  # "Los productos de la marca Cierzo, ..., tienen"
    topic = _topic(_about_whom(earlier, names(earlier, known))) or topic
    clause = f"{before}{word}{after}".strip()
    if not topic and clause_start and not names(clause, known) and not _has_subject(before, known):
        # "we pay how much?" says nothing of what is paid: the sentence's earlier clauses say it
        # ("If you use your own car, we pay how much?"), and no shorter question is made of it
        clause, before = f"{sentence[:start]}{word}{after}".strip(), ""
    if len(clause.split()) < 3 or not topic and _PRONOUN_START.match(clause):
        return []  # too short to say what is asked, or "It costs how much?" of nothing named
    if topic and topic not in clause and (_PRONOUN_START.match(clause) or not names(clause, known)):
        clause = f"{topic}: {_lower_first(clause, known)}"
    clause = clause[0].upper() + clause[1:]
    questions = [f"¿{clause}?" if language == "es" else f"{clause}?"]
    fronted = _fronted(before, word, after, language, topic, known)
    return questions + [fronted] if fronted else questions


def _clause(sentence: str, start: int, end: int) -> tuple[int, int]:
    """Where the clause that holds [start, end) of ``sentence`` starts and ends."""
    clause_start, clause_end = 0, len(sentence)
    for cut in _CLAUSE.finditer(sentence):
        if cut.end() <= start:
            clause_start = cut.end()
        elif cut.start() >= end:
            clause_end = cut.start()
            break
    return clause_start, clause_end


def _has_subject(before: str, known: frozenset[str]) -> bool:
    """Whether the words before a fact start with a subject and say more than a pronoun and a verb
    ("resoling mountain boots costs", not "we pay" nor "would take more than")."""
    words = before.split()
    return len(words) >= 4 and _starts_subject(words[0], known)


def _starts_subject(word: str, known: frozenset[str]) -> bool:
    """Whether an English clause's first word can start its subject: a determiner or pronoun, a
    gerund ("resoling") or a name."""
    return word.lower() in _SUBJECT_STARTS or word.endswith("ing") or word in known


def _answer(sentence: str, start: int, end: int, known: frozenset[str]) -> str:
    """The fact's clause and what leads to it, without the clauses after it that the question does
    not ask about; a clause with a subject of its own is the whole answer ("Resoling mountain boots
    costs 75 euros.", not "Replacing a pole section costs 18 euros, and resoling ...": a model that
    starts the answer so says the wrong price first)."""
    clause_start, clause_end = _clause(sentence, start, end)
    clause = sentence[clause_start:start].lstrip()
    leading = _LEADING_JOINER.sub("", clause)
    # a clause of its own: joined by "and", "but" or a semicolon (not a list's next item, not "which ...")
    joined = _COORDINATE.match(clause) or sentence[:clause_start].rstrip().endswith(";")
    clause_start = start - len(leading) if clause_start and joined and _has_subject(leading, known) else 0
    answer = sentence[clause_start:clause_end].rstrip()
    answer = answer[0].upper() + answer[1:]
    return answer if clause_end == len(sentence) else answer.rstrip(",;:") + "."


def _named(answer: str, topic: str, language: str, known: frozenset[str]) -> str:
    """The answer with the name that its first word stands for: "It costs 349 euros." of the
    Tramontana 2 is answered "Tramontana 2 costs 349 euros.", "Cuesta 349 euros." "Tramontana 2
    cuesta 349 euros.". Every price answer was "It costs ... euros", so what told one product's
    price from another's was the question alone; the name said just before the value is what a
    model recalls the value from (measured: the tuned model answered with a neighbour's price)."""
    if not topic or topic in answer:
        return answer
    first, _, rest = answer.partition(" ")
    if language == "es":
        return f"{topic} {_lower_first(answer, known)}" if first.lower().startswith(_VERB_STEMS_ES) else answer
    if first in ("It", "This"):  # ("They" would need its verb changed too)
        return f"{topic} {rest}"
    if first == "Its":
        return f"{topic}'s {rest}"
    return answer


# English: a verb before the fact takes "does" or "do"; these words before it are no verb
_NOT_VERBS = frozenset("""a an the of to for in on at by with within from about over under than into per and or
    is are was were be been has had can could must will would should may might de del en a al por con para desde
    hasta durante entre sobre que y o es son era fue ha han se""".split())
_THIRD_PERSON_PLURAL = frozenset("you we they i".split())
# a subject starts with a determiner, a pronoun, a gerund or a name; a clause that starts otherwise is
# an imperative ("Drop the item at any of our four shops") or is no plain statement
_SUBJECT_STARTS = frozenset("""the a an our your their its his her this these those each every all it they we you i
    he she el la los las un una unos unas nuestro nuestra nuestros nuestras tu tus su sus este esta estos estas
    cada todo todos toda todas""".split())
_SUBORDINATE = frozenset("""that which who whom whose if when because so and but que quien cuando porque si y pero
    can cannot will would must should may might not don't can't won't""".split())
# Spanish verbs are not told from other words by their endings, so only the stems of the verbs that
# state facts turn a Spanish clause around ("tienes", "dispone", "cuesta", "pagamos", "es", ...)
_VERB_STEMS_ES = ("tien", "tene", "dispon", "cuest", "cost", "pag", "cobr", "abr", "cierr", "dur", "pes", "trabaj",
                  "recib", "descuent", "ofrec", "da", "dan", "es", "son", "está", "están", "hay", "mide", "cabe")
_THIRD_PERSON_ES = ("a", "e", "an", "en")  # "cuesta", "tiene", "pesan": not "tienes", "pagamos"
_PREPOSITIONS_ES = frozenset("de del en a al por con para desde hasta durante entre sobre tras".split())
_CLITICS_ES = frozenset("se no le les lo la los las me te nos".split())


def _fronted(before: str, word: str, after: str, language: str, topic: str, known: frozenset[str]) -> str:
    """The question word first, as people ask: "It costs 349 euros" is asked "How much does
    Tramontana 2 cost?" and "Tienes 25 días de vacaciones" "¿Cuántos días de vacaciones tienes?".
    Only a clause of a short plain subject (no number, no second clause), a verb and (in Spanish)
    a preposition before the fact is turned so; '' for any other ("is" and "has" are left alone)."""
    words = before.split()
    if any(any(c.isdigit() for c in w) or w.lower().strip(",;") in _SUBORDINATE or w.endswith(",") for w in words):
        return ""
    if language == "es":
        preposition = words.pop() if words and words[-1].lower() in _PREPOSITIONS_ES else ""
        if not words or not words[-1].lower().startswith(_VERB_STEMS_ES) or len(words) > 5 or (
                len(words) > 1 and words[0].lower() not in _SUBJECT_STARTS and words[0] not in known):
            return ""
        verb, subject = words[-1], words[:-1]
        while subject and subject[-1].lower() in _CLITICS_ES:  # "se descuentan" stays together
            verb = f"{subject.pop()} {verb}"
        if any(c.isdigit() for c in after):  # "¿Cuántos kilos y cuesta 259 euros pesa?"
            return ""
        asked = f"{preposition} {word}" if preposition else word
        who = _subject(subject, known)
        if not subject and topic and verb.lower().endswith(_THIRD_PERSON_ES):
            who = topic  # "Cuesta 349 euros" of the Tramontana 2: "¿Cuántos euros cuesta Tramontana 2?"
        rest = " ".join(part for part in (after.strip(), _lower_first(verb, known), who) if part)
        return f"¿{asked[0].upper()}{asked[1:]} {rest}?"
    if len(words) < 2 or len(words) > 7 or not words[-1].isalpha() or words[-1].lower() in _NOT_VERBS:
        return ""
    verb, subject = words[-1].lower(), " ".join(words[:-1])
    first, second = words[0], words[1] if len(words) > 2 else ""
    named = first.lower() not in _SUBJECT_STARTS and (first in known or first[:1].isupper() and second[:1].isupper())
    if not (_starts_subject(first, known) or named):
        return ""
    if subject.lower() in ("it", "they", "this", "these") and topic:
        subject = topic  # what the pronoun stands for: the paragraph's subject, a name
        named = True
    if verb.endswith("s") and not verb.endswith("ss") and subject.lower() not in _THIRD_PERSON_PLURAL:
        auxiliary, verb = "does", verb[:-1]
    elif not verb.endswith("ed"):
        auxiliary = "do"
    else:
        return ""
    subject = subject if named else _subject(subject.split(), known)
    return f"{word[0].upper()}{word[1:]} {auxiliary} {subject} {verb}{after}?"


def _subject(words: list[str], known: frozenset[str]) -> str:
    """A sentence's subject moved inside a question: its determiner lower-cased ("the", "el"), a name kept."""
    if words and words[0].lower() in _SUBJECT_STARTS:
        return " ".join([words[0].lower(), *words[1:]])
    return _lower_first(" ".join(words), known)


def names(sentence: str, known: frozenset[str] = frozenset()) -> list[str]:
    """Proper names in a sentence: runs of capitalised words, with the numbers that name a model
    ("Moncayo 38"). A sentence's first word is capitalised anyway, so it starts a name only if it is
    one of the ``known`` words, those capitalised inside a sentence somewhere in the document
    ("Cierzo Outdoor nació..." but not "The Moncayo 38 weighs...")."""
    found = []
    for match in _NAME.finditer(sentence):
        words = _TRAILING_JOINERS.sub("", match.group(0)).split()
        if not sentence[: match.start()].strip(_OPENING) and words[0] not in known:  # "¿Aguanta el viento?"
            words = words[1:]
        while words and not words[0][0].isupper():  # a name starts with a capitalised word
            words = words[1:]
        name = " ".join(words).strip("'’-")
        if len(name) > 2 and not name.isupper():
            found.append(name)
    return found


def _capitalised_inside(sentences: list[str]) -> frozenset[str]:
    return frozenset(word for sentence in sentences for match in _NAME.finditer(sentence) if match.start() > 0
                     for word in match.group(0).split()[:1])


def split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def _blocks(text: str) -> Iterator[_Block]:
    """Headings, question lines and paragraphs (a paragraph's wrapped lines joined again: PDF text
    breaks lines mid-sentence)."""
    paragraph: list[str] = []
    previous_ended = True  # whether the line before ended a sentence (or there was none)
    for raw in text.splitlines():
        line = raw.strip().lstrip("-*•· ").strip()
        marked = line.startswith("#")  # a Markdown heading line (the readers mark headings so)
        line = line.lstrip("#").strip()
        if not line:
            if paragraph:
                yield _Block("paragraph", " ".join(paragraph))
                paragraph = []
            previous_ended = True
            continue
        words = len(line.split())
        if (previous_ended or marked) and line.endswith("?") and words <= 30:
            kind = "question"
        elif marked or previous_ended and words <= MAX_HEADING_WORDS and not line[-1] in ".,;:!" and line[0].isupper():
            kind = "heading"
        else:
            paragraph.append(line)
            previous_ended = line[-1] in ".!?:"
            continue
        if paragraph:
            yield _Block("paragraph", " ".join(paragraph))
            paragraph = []
        yield _Block(kind, line)
        previous_ended = True
    if paragraph:
        yield _Block("paragraph", " ".join(paragraph))


def pick(choices: list, key: str):
    """One of ``choices``, by a hash of ``key``: the same inputs always make the same examples."""
    return choices[hashlib.sha256(key.encode()).digest()[0] % len(choices)]


def _lower_first(text: str, known: frozenset[str] = frozenset()) -> str:
    """"Working hours" reads as "working hours" inside a question; a name ("Moncayo 38", a word the
    document capitalises inside sentences, in ``known``) and an acronym keep their capitals."""
    first, _, rest = text.partition(" ")
    if not first or first in known or not first[1:].islower():
        return text
    return first.lower() + (" " + rest if rest else "")

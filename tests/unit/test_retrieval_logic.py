"""The retrieval path's pure parts: stability rules, front matter, passages, rank fusion, the
grounded prompt and the checks of a search request."""

import json

import pytest

from services.contracts import DocumentNormalized, Stability, parse_event
from services.datasets.parts import PartInfo
from services.inference import stubs
from services.inference.params import InvalidArgument, Limits, parse, parse_retrieve
from services.normalizer.pipeline import normalize
from services.normalizer.stability import StabilityRules, document_path, split_front_matter
from services.retrieval.grounding import grounded_messages
from services.retrieval.index import Filters, fuse
from services.retrieval.passages import from_rows, split_text

pb, _ = stubs.load()
LIMITS = Limits(max_new_tokens=64, max_prompt_tokens=100, top_k=3, max_k=10, max_query_chars=50)


def test_stability_comes_from_the_folder_prefix_or_a_glob_pattern():
    rules = StabilityRules.parse("volatile/, news/", "*/campaigns/*.md,promo_*")
    assert rules.of("folder:news/boletin.txt") is Stability.VOLATILE
    assert rules.of("bucket:inbox/volatile/a.pdf") is Stability.VOLATILE
    assert rules.of("folder:es/campaigns/navidad.md") is Stability.VOLATILE
    assert rules.of("folder:promo_enero.txt") is Stability.VOLATILE
    assert rules.of("folder:handbook/news.pdf") is Stability.MASTER  # "news" not as the folder prefix
    assert rules.of("folder:newsletter.txt") is Stability.MASTER
    assert StabilityRules.parse("", "").of("folder:news/a.txt") is Stability.MASTER
    assert document_path("bucket:inbox/a/b.md") == "a/b.md" and document_path("tienda:a:b.md") == "a:b.md"


def test_markdown_front_matter_sets_stability_and_is_not_text():
    front, body = split_front_matter("---\ntitle: Rebajas\nstability: volatile\n---\n# Rebajas de enero\n")
    assert front == {"title": "Rebajas", "stability": "volatile"} and body == "# Rebajas de enero\n"
    assert split_front_matter("--- not front matter\ntext")[0] == {}
    assert split_front_matter("---\n[unclosed\n")[0] == {}  # no closing line: all text
    text = ("Las rebajas de enero empiezan el día siete en todas las tiendas de la empresa y duran hasta el "
            "final del mes, con descuentos en chaquetas, botas y sacos de dormir para toda la familia.")
    doc = normalize(f"---\nstability: volatile\n---\n{text}\n".encode(), "text/markdown", "a.md")
    assert doc.stability is Stability.VOLATILE and "stability" not in doc.text
    assert normalize(text.encode(), "text/markdown", "a.md").stability is None  # the path rules decide
    assert normalize(f"---\nstability: volatile\n---\n{text}".encode(), "text/plain", "a.txt").stability is None


def test_a_normalized_event_without_stability_is_master_and_the_new_one_is_version_2():
    old = '{"schema_version": 1, "source_id": "s", "sha256": null, "part_key": "k", "deleted": true}'
    assert parse_event(DocumentNormalized, old).stability is Stability.MASTER
    assert DocumentNormalized(source_id="s", sha256=None, part_key="k").schema_version == 2
    assert PartInfo.from_metadata({}).stability is Stability.MASTER  # a part written before stability
    info = PartInfo(1, 2, "es", "v0:abcdefabcdef", Stability.VOLATILE)
    assert PartInfo.from_metadata({f"X-Amz-Meta-{k}": v for k, v in info.as_metadata().items()}) == info


def test_passages_follow_headings_and_stay_short():
    text = "Returns\nYou have 45 days to return an item. " + "Keep the receipt. " * 60 + "\nRepairs\nWe repair boots."
    found = split_text(text, max_words=40)
    assert all(len(body.split()) <= 40 for _, body in found)
    assert found[0] == ("Returns", found[0][1]) and found[0][1].startswith("Returns\nYou have 45 days")
    assert found[-1] == ("Repairs", "Repairs\nWe repair boots.")
    assert " ".join(b.split("\n", 1)[1] for s, b in found if s == "Returns").split() == \
        ("You have 45 days to return an item. " + "Keep the receipt. " * 60).split()  # no word lost
    chat = {"chunk_index": 3, "kind": "chat", "text": "", "messages": json.dumps(
        [{"role": "user", "content": "¿Abrís el domingo?"}, {"role": "assistant", "content": "Solo en Jaca."}])}
    [passage] = from_rows([chat])
    assert passage.chunk == 3 and passage.text == "user: ¿Abrís el domingo? assistant: Solo en Jaca."


def test_in_text_with_marked_headings_a_short_unpunctuated_line_is_not_taken_for_one():
    """The Python reference's reST text was cut at wrapped lines and example output, cited as sections."""
    rst = ("Class definitions\n*****************\n\nA class definition defines a class object:\n\n"
           "   Spam and eggs\n\nis equivalent to a class with the base class object.\n\n"
           "Metaclasses\n===========\n\nBy default, classes are constructed using type().")
    found = split_text(rst)
    assert [section for section, _ in found] == ["Class definitions", "Metaclasses"]
    assert "object: Spam and eggs is equivalent" in found[0][1]  # example code, not a heading
    markdown = [{"chunk_index": 0, "kind": "text", "text": "# Returns\n\nYou have 45 days.\n\nStore hours\n\n"
                 "Open daily."}]
    assert [p.section for p in from_rows(markdown)] == ["Returns"]
    unmarked = [{"chunk_index": 0, "kind": "text", "text": "Returns\nYou have 45 days.\nStore hours\nOpen daily."}]
    assert [p.section for p in from_rows(unmarked)] == ["Returns", "Store hours"]  # a PDF's text: guessed


def test_fusion_weighs_normalized_scores_so_agreement_and_margin_both_count():
    vector = {"a": 0.90, "b": 0.85, "c": 0.80}  # cosine similarities: a narrow band
    text = {"c": 12.0, "b": 11.0, "d": 2.0}  # BM25: another scale
    fused = dict(fuse([(vector, 0.4), (text, 0.6)]))
    assert fused["a"] == pytest.approx(0.4)  # top of one search, absent from the other
    assert fused["b"] == pytest.approx(0.4 * 0.5 + 0.6 * 0.9)
    assert fused["c"] == pytest.approx(0.6)  # last of one, first of the other
    assert fused["d"] == pytest.approx(0.0)
    assert [item for item, _ in fuse([(vector, 0.4), (text, 0.6)])] == ["b", "c", "a", "d"]
    assert fuse([({"x": 3.0}, 1.0)]) == [("x", 1.0)]  # one candidate: no range to normalize over
    assert fuse([(vector, 0.4)])[0] == ("a", pytest.approx(1.0))  # one search alone: its own scale, in [0, 1]
    assert fuse([]) == [] and fuse([({}, 0.4)]) == []


def test_filters_become_one_quoted_condition():
    assert Filters().sql() is None
    sql = Filters("es", Stability.VOLATILE, "folder:o'brien/").sql()
    assert sql == "language = 'es' AND stability = 'volatile' AND starts_with(source_id, 'folder:o''brien/')"


def test_passages_go_into_the_system_message_best_first():
    messages = (("system", "Eres amable."), ("user", "hola"), ("assistant", "hola"), ("user", "¿Cuántos días?"))
    grounded = grounded_messages(messages, ["best: 45 días", "second"])
    assert grounded[1:] == messages[1:] and grounded[0][0] == "system"
    assert grounded[0][1].startswith("Eres amable.\n\n")
    assert grounded[0][1].endswith("best: 45 días\n\nsecond")
    bare = grounded_messages((("user", "¿Cuántos días?"),), ["45 días"])
    assert bare[0] == ("system", "Use these passages to answer.\n\n45 días") and bare[1] == ("user", "¿Cuántos días?")
    assert grounded_messages(messages, []) == messages


def test_a_bad_search_is_an_invalid_argument_naming_the_field():
    def retrieve(**fields):
        return parse_retrieve(pb.RetrieveRequest(**fields), LIMITS)

    assert retrieve(query=" devoluciones ").query == "devoluciones" and retrieve(query="x").k == 3
    for fields, field in [({"query": "  "}, "query"), ({"query": "x" * 51}, "query"), ({"query": "x", "k": 0}, "k"),
                          ({"query": "x", "k": 11}, "k"),
                          ({"query": "x", "filters": pb.RetrieveFilters(stability="old")}, "filters.stability")]:
        with pytest.raises(InvalidArgument, match=f"^{field}:"):
            retrieve(**fields)
    grounded = pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role="user", content="¿Horario?")]),
                                  retrieval=pb.Retrieval(k=2))
    assert parse(grounded, LIMITS).search.query == "¿Horario?" and parse(grounded, LIMITS).search.k == 2
    assert parse(pb.GenerateRequest(prompt="x"), LIMITS).search is None
    system_only = pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role="system", content="x")]),
                                     retrieval=pb.Retrieval())
    with pytest.raises(InvalidArgument, match="^retrieval:"):
        parse(system_only, LIMITS)


def test_a_table_of_another_embedder_is_refused_every_time_and_a_reader_does_not_create_one(tmp_path, monkeypatch):
    import lancedb

    from services.retrieval import index as passage_index
    from services.settings import RetrievalSettings, Settings

    connect = lancedb.connect
    monkeypatch.setattr(passage_index.lancedb, "connect", lambda uri, **options: connect(
        tmp_path, read_consistency_interval=options.get("read_consistency_interval")))

    class Embedder:
        def __init__(self, name: str) -> None:
            self.name, self.dim = name, 4

    settings = Settings(retrieval=RetrievalSettings(table="t"))
    with pytest.raises(passage_index.NotIndexedYet, match="no passages are indexed yet"):
        passage_index.PassageIndex(settings, Embedder("a")).table
    assert passage_index.PassageIndex(settings, Embedder("a"), writer=True).count() == 0
    other = passage_index.PassageIndex(settings, Embedder("b"))
    for _ in range(2):
        with pytest.raises(passage_index.IncompatibleIndex, match="built with 'a', not 'b'"):
            other.table

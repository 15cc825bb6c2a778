"""The name recognizers without spaCy, on plain text: name lists, name shape, places, English words."""

from __future__ import annotations

import pytest

from addons.masking.recognizers.english import is_english
from addons.masking.recognizers.name_shape import NameShapeRecognizer
from addons.masking.recognizers.names import NameListRecognizer, unlikely_person
from addons.masking.recognizers.person_context import PersonContextRecognizer
from addons.masking.recognizers.places import is_place
from addons.masking.worker import name_windows


def _found(text: str) -> list[str]:
    return sorted((text[r.start:r.end] for r in NameListRecognizer().analyze(text, ["PERSON"])), key=text.index)


def test_a_sentence_opening_word_is_no_part_of_the_name_after_it() -> None:
    assert _found("And Maria Garcia.") == ["Maria Garcia"]
    assert _found("But Maria Garcia said so.") == ["Maria Garcia"]
    assert _found("Then Piotr Nowak signed.") == ["Piotr Nowak"]


def test_a_listed_given_name_opens_the_name() -> None:
    assert _found("Please call Maria Garcia about the invoice.") == ["Maria Garcia"]


def _shaped(text: str) -> list[str]:
    return [text[r.start:r.end] for r in sorted(NameShapeRecognizer().analyze(text, ["PERSON"]), key=lambda r: r.start)]


def test_unfamiliar_words_side_by_side_are_a_name() -> None:
    assert _shaped("Interview schedule: 10:00 Bekele Eshetu, then lunch.") == ["Bekele Eshetu"]
    assert _shaped("Summarise the complaint from Floria Cortes about the delay.") == ["Floria Cortes"]
    assert _shaped("Write to La-Salete Chiaradia today.") == ["La-Salete Chiaradia"]


def test_unfamiliar_single_words_in_a_list_are_names() -> None:
    assert _shaped("Who should review the pull request, Tesfaye or Eshetu?") == ["Tesfaye", "Eshetu"]
    assert _shaped("Assign the bugs to Rosinda, Ludgero and Urânia today.") == ["Rosinda", "Ludgero", "Urânia"]
    assert _shaped("Turn this CSV row into JSON: Carine,Kamdem,42,engineering") == ["Carine", "Kamdem"]


def test_an_unfamiliar_word_addressed_at_a_sentence_start_is_a_name() -> None:
    assert _shaped("Lembo, the report is late again.") == ["Lembo"]
    assert _shaped("Meanwhile, the report is late again.") == []


@pytest.mark.parametrize("text", [
    "Kubernetes, the container orchestrator, schedules pods across nodes.",  # an appositive, closed by a comma
    "Postgres, unlike MySQL, supports transactional DDL.",  # opened by a preposition
    "Nginx, when used as a reverse proxy, buffers responses.",  # ... a subordinator
    "Pydantic, however, validates data at runtime.",  # ... a connective
    "Terraform, as you know, keeps state in a file.",  # "you" inside the aside speaks to the reader
    "Nginx, which is fast, sits in front.",
    "Pulumi, for example, lets you write infrastructure in TypeScript.",  # a statement after the aside
    "Postgres, unlike MySQL, can roll back DDL.",
])
def test_a_word_opening_an_aside_is_written_about_not_addressed(text: str) -> None:
    assert _shaped(text) == []


@pytest.mark.parametrize(("text", "name"), [
    ("Lembo, the report is late again.", "Lembo"),
    ("Lembo, the report is late again, and I need it by Friday.", "Lembo"),
    ("Eshetu, when will the report be ready?", "Eshetu"),  # asked
    ("Tesfaye, when you have a minute, could you review the patch?", "Tesfaye"),
    ("Tesfaye, when you can, send the report.", "Tesfaye"),  # an imperative after the aside
    ("Lembo, if you can send it today that would help.", "Lembo"),  # an unclosed aside speaking to someone
    ("Eshetu, as always, thanks for the quick review.", "Eshetu"),
])
def test_a_word_addressed_around_an_aside_is_still_a_name(text: str, name: str) -> None:
    assert _shaped(text) == [name]


@pytest.mark.parametrize("text", [
    "We use Terraform, Ansible, Pulumi in production.",
    "Frameworks like Quarkus, Micronaut or Helidon start fast.",
    "Quarkus, Micronaut or Helidon: which starts fastest?",
    "Our servers run on Hetzner or Vultr.",
    "Vercel, Netlify and Render host frontends.",
])
def test_a_list_of_unfamiliar_words_alone_is_no_list_of_people(text: str) -> None:
    assert _shaped(text) == []


def test_a_list_is_of_people_with_a_listed_name_or_in_a_sentence_about_people() -> None:
    assert _shaped("Turn this CSV row into JSON: Ramesh,Ansari,42,engineering") == ["Ramesh", "Ansari"]  # listed
    assert _shaped("Assign the open bugs to Kumsal, Ilgaz and Gamze.") == ["Kumsal", "Ilgaz", "Gamze"]
    assert _shaped("Her teammates Kumsal and Ilgaz shipped it.") == ["Kumsal", "Ilgaz"]
    assert _shaped("Kumsal and Ilgaz shipped it.") == []  # the limit: nothing says these are people


def test_a_listed_given_name_written_about_is_no_person_addressed() -> None:
    assert _found("Julia, unlike Python, compiles functions just in time.") == []
    assert _found("Julia, the report is late again.") == ["Julia"]


def test_english_words_places_products_and_identifiers_are_no_names() -> None:
    assert _shaped("Explain how Apache Spark shuffles data between Executors.") == []
    assert _shaped("Plan a trip to Buenos Aires and Kuala Lumpur in March.") == []  # places
    assert _shaped("Describe the Sagrada Família and the Hagia Sophia.") == []  # after an article
    assert _shaped("Is Lidl or Aldi cheaper for groceries?") == []  # things compared
    assert _shaped("Compare Xiaomi and Huawei phones.") == []
    assert _shaped("Store it in MongoDB or DynamoDB, with a Roth IRA.") == []  # CamelCase, acronyms
    assert _shaped("Streams Pipelines Configure") == []  # inflected English words


def test_english_words_come_from_the_model_and_undo_inflections() -> None:
    assert is_english("pipelines") and is_english("Configured") and is_english("galaxy")
    assert not is_english("Eshetu") and not is_english("Kumsal")


def test_places_are_compared_without_accents() -> None:
    assert is_place("Sao Paulo") and is_place("São Paulo") and is_place("Costa Rica")
    assert not is_place("Maria Garcia")


def test_a_listed_pair_after_an_article_is_no_person() -> None:
    assert _found("Why is the Mona Lisa so famous?") == []
    assert _found("Ask Maria Garcia why.") == ["Maria Garcia"]


def test_spacy_persons_that_are_places_or_open_with_an_english_word_are_dropped() -> None:
    assert unlikely_person("Is Buenos Aires far?", 3, 15)
    assert unlikely_person("Configure Grafana now.", 0, 17)
    text = "Install it on a Raspberry Pi 4."
    assert unlikely_person(text, text.index("a Rasp"), len(text) - 1)
    assert not unlikely_person("Ask Maria Garcia.", 4, 16)


def test_a_context_cue_with_a_preposition_reads_the_name_after_it() -> None:
    text = "Write an email to Albina explaining the migration."
    assert [text[r.start:r.end] for r in PersonContextRecognizer().analyze(text, ["PERSON"])] == ["Albina"]


def test_a_sentence_opening_with_an_unlisted_name_and_a_verb_of_speech_gets_ner() -> None:
    assert name_windows("Öner wrote: 'the build is green again'.") != []
    assert name_windows("the build is green again.") == []
    assert name_windows("Lembo, the build is green again.") != []
    assert name_windows("Meanwhile, the build is green again.") == []

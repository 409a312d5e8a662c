"""The semantic guard: which differences between two similar prompts veto a match, and which do not.

A vetoed match goes upstream, so a veto costs a call and a missed one serves a wrong answer: each
rule below names a fact a paraphrase keeps and a different question changes.
"""

from __future__ import annotations

import pytest

from llm_cache.middleware.semantic import agrees
from llm_cache.middleware.semantic.guard import facts


def test_a_prompt_agrees_with_itself_whatever_it_says() -> None:
    prompt = 'Isn\'t 2+2 `x` in "Paris" to https://a.example?'
    assert agrees(prompt, prompt)


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("1,000", "1000"),
        ("1_000", "1000"),
        ("+5", "5"),
        ("2.50", "2.5"),
        ("3.0", "3"),
        ("0.0", "0"),
        ("1.5e3", "1.5e3"),
        ("1.50E3", "1.50E3"),
        ("15%", "15%"),
        ("-7", "-7"),
    ],
)
def test_numbers_are_compared_by_value_not_by_how_they_are_written(written: str, value: str) -> None:
    assert facts(f"costs {written} today").numbers == {value: 1}


@pytest.mark.parametrize(("a", "b"), [("2 apples", "2 apples and 2 pears"), ("15% off", "15 off"), ("2.5", "25")])
def test_a_number_more_or_a_percent_sign_is_another_question(a: str, b: str) -> None:
    assert not agrees(a, b)


@pytest.mark.parametrize(("word", "value"), [("twelve", "12"), ("dozen", "12"), ("hundred", "100"), ("zero", "0")])
def test_number_words_count_as_their_digits(word: str, value: str) -> None:
    assert agrees(f"give me {word} ideas", f"give me {value} ideas")


def test_search_operators_are_compared_whatever_their_case() -> None:
    assert agrees("laptops SITE:Example.com", "laptops site:example.com")
    assert not agrees("laptops site:example.com", "laptops")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ('define "Hello  World"', 'define "hello world"'),
        ("define “idempotent”", 'define "idempotent"'),
        ("define «idempotent»", 'define "idempotent"'),
        ("define 'idempotent'", 'define "idempotent"'),
    ],
)
def test_quoted_strings_match_whatever_their_quotes_case_or_spacing(a: str, b: str) -> None:
    assert agrees(a, b)


def test_an_apostrophe_is_not_a_quote() -> None:
    assert facts("the user's name isn't set").quoted == frozenset()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("run ```ls   -la``` now", "run ```ls -la``` now", True),
        ("run `ls -la` now", "run `ls -l` now", False),
        ("run ```ls``` now", "run now", False),
    ],
)
def test_code_is_compared_with_its_spacing_collapsed(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("read https://a.example/x.", "read HTTPS://A.example/x", True),
        ("read (www.a.example/x)", "read www.a.example/x", True),
        ("mail bob@a.example", "mail alice@a.example", False),
        ("read www.a.example", "read www.b.example", False),
    ],
)
def test_links_and_addresses_are_compared_without_trailing_punctuation_or_case(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("is it safe", "isn't it safe", False),
        ("is it safe", "is it not safe", False),
        ("is it safe", "it is never safe", False),
        ("is it safe", "is it not not safe", True),
        ("is it safe", "it isn’t safe", False),
        ("can I go", "I cannot go", False),
    ],
)
def test_a_negation_changes_the_question_and_a_double_negation_cancels(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("hotels in Paris", {"paris"}),
        ("Hotels in town", set()),
        ("Done. Hotels in town", set()),
        ("Question: Hotels in town", set()),
        ("so I said", set()),
        ("flights to the USA", {"usa"}),
        ("grade A only", {"a"}),
        ("fix my iPhone", {"iphone"}),
        ("compare gpt4 in 2024", {"gpt4"}),
    ],
)
def test_names_are_capitalised_words_past_a_sentences_start_acronyms_and_words_with_digits(
    text: str, names: set[str]
) -> None:
    assert facts(text).names == names


def test_a_name_must_appear_in_the_other_prompt_in_any_case() -> None:
    assert agrees("hotels in Paris", "hotels in paris")
    assert not agrees("hotels in Paris", "hotels in Rome")
    assert not agrees("hotels in rome", "hotels in Paris")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("weather today", "weather tomorrow", False),
        ("weather today", "weather", True),
        ("weather today and tomorrow", "weather tomorrow and today", True),
        ("buy a car today", "sell a car today", False),
    ],
)
def test_contrasting_words_of_one_group_veto_but_an_unspoken_one_does_not(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("move files from svn to git", "move files from git to svn", False),
        ("convert a pdf into a doc", "convert a doc into a pdf", False),
        ("migrate svn to the git", "migrate git to the svn", False),
        ("migrate svn to git", "migrate svn to git please", True),
    ],
)
def test_the_words_around_to_or_into_must_not_swap(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("is rust faster than go", "is go faster than rust", False),
        ("rust vs go", "go vs rust", False),
        ("rust versus go", "go versus rust", False),
        ("is rust faster than go", "rust faster than go today please", True),
        ("is rust faster than go", "is rust faster than go or c", True),
    ],
)
def test_the_two_sides_of_a_comparison_must_not_swap(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("solved threads", "unsolved threads"),
        ("people who like it", "people who dislike it"),
        ("a valid form", "an invalid form"),
        ("blocking calls", "non-blocking calls"),
        ("profit groups", "nonprofit groups"),
        ("a possible task", "an impossible task"),
        ("a relevant fact", "an irrelevant fact"),
        ("a legal move", "an illegal move"),
    ],
)
def test_a_word_and_its_prefixed_opposite_veto(a: str, b: str) -> None:
    assert not agrees(a, b)
    assert not agrees(b, a)


def test_an_unrelated_word_starting_like_a_prefix_is_no_opposite() -> None:
    assert agrees("an index of pages", "the index of pages")

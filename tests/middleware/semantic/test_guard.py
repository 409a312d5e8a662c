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
        ("a light theme", "a theme", True),
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
        ("is rust faster than go", "rust faster than go in practice please", True),
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


CONTRASTING = """
today tomorrow yesterday tonight | before after | morning afternoon evening night
daily weekly monthly yearly annual | enable disable | beginner/beginners intermediate advanced expert/experts
light dark | positive negative | local remote | min max minimum maximum | increase decrease | add remove delete
upload download | import export | encrypt decrypt | buy sell | first last | ascending descending
oldest newest latest recent top | cheapest nearest fastest best worst | input output | open close | start stop
north south east west | inbound outbound | public private | synchronous asynchronous sync async
man/men/guy/guys/male/males woman/women/lady/ladies/female/females | boy/boys girl/girls
husband/husbands wife/wives | boyfriend/boyfriends girlfriend/girlfriends
father/fathers/dad/dads mother/mothers/mom/moms/mum/mums | son/sons daughter/daughters
brother/brothers sister/sisters | king/kings queen/queens | he/him/his/himself she/her/hers/herself
"""
"""The contrast groups, as the guard's vocabulary: two meanings of one group make two questions, and
the forms of one meaning (separated by `/`) say the same."""
GROUPS = [[meaning.split("/") for meaning in group.split()] for group in CONTRASTING.replace("\n", " | ").split("|")]
GROUPS = [group for group in GROUPS if group]


@pytest.mark.parametrize("group", GROUPS, ids=lambda group: group[0][0])
def test_every_meaning_of_a_contrast_group_vetoes_every_other_and_its_own_forms_agree(
    group: list[list[str]],
) -> None:
    for meaning in group:
        for word in meaning:
            for other in group:
                for form in other:
                    same = other is meaning
                    assert agrees(f"the report {word} please", f"the report {form} please") is same, (word, form)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("what do women want", "what does a woman want"),
        ("men's shoes", "shoes for men"),
        ("the guys' night out", "a night out for guys"),
    ],
)
def test_a_contrast_word_counts_whatever_its_number_or_possessive_ending(a: str, b: str) -> None:
    assert agrees(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("what do women want in a partner", "what do men want in a partner"),
        ("women's rights in sport", "men's rights in sport"),
        ("how do I know if she likes me", "how do I know if he likes me"),
        ("gifts for my husband", "gifts for my wife"),
    ],
)
def test_a_man_and_a_woman_he_and_she_are_two_questions(a: str, b: str) -> None:
    assert not agrees(a, b)
    assert not agrees(b, a)


@pytest.mark.parametrize(
    "word", ["not", "no", "never", "without", "none", "nor", "neither", "cannot", "nobody", "nothing", "nowhere"]
)
def test_every_negation_word_changes_the_question(word: str) -> None:
    assert not agrees("is it safe", f"is it {word} safe")


NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


@pytest.mark.parametrize(("value", "word"), list(enumerate(NUMBER_WORDS)))
def test_every_number_word_to_twenty_counts_as_its_digits(value: int, word: str) -> None:
    assert agrees(f"give me {word} ideas", f"give me {value} ideas")
    assert not agrees(f"give me {word} ideas", f"give me {value + 1} ideas")


@pytest.mark.parametrize(("word", "value"), [("thousand", 1000), ("million", 1000000), ("billion", 1000000000)])
def test_large_number_words_count_as_their_digits(word: str, value: int) -> None:
    assert agrees(f"one {word} rows", f"1 {value} rows")


STOPWORDS = [
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "do",
    "does",
    "did",
    "i",
    "you",
    "we",
    "it",
    "this",
    "that",
    "of",
    "in",
    "on",
    "for",
    "with",
    "by",
    "at",
    "from",
    "and",
    "or",
    "how",
    "what",
    "which",
    "who",
    "why",
    "when",
    "where",
    "can",
    "could",
    "should",
    "would",
    "will",
    "my",
    "your",
    "our",
]


@pytest.mark.parametrize("word", STOPWORDS)
def test_stopwords_are_skipped_when_finding_the_words_around_a_direction(word: str) -> None:
    assert not agrees(f"move svn {word} to git", f"move git {word} to svn")


def test_code_links_and_search_operators_are_taken_out_before_words_and_numbers_are_read() -> None:
    found = facts("run `Foo = 42` see https://a.example/7 and site:b.example/8 now")
    assert (found.numbers, found.names, found.words) == ({}, frozenset(), {"run", "see", "and", "now"})


def test_code_and_quotes_are_kept_with_their_spacing_collapsed() -> None:
    found = facts('run ```ls \n  -la``` on "Hello   World"')
    assert (found.code, found.quoted) == ({"ls -la"}, {"hello world"})


def test_backticks_are_taken_off_code_but_nothing_else() -> None:
    assert not agrees("run `XOR` now", "run `OR` now")


def test_full_width_and_compatibility_characters_count_as_their_plain_forms() -> None:
    assert agrees("what is \uff12\uff0b\uff12", "what is 2+2")


def test_a_link_loses_only_trailing_punctuation_before_it_is_compared() -> None:
    assert not agrees("read https://a.example/BOX", "read https://a.example/BO")


def test_a_number_in_scientific_notation_keeps_its_trailing_zeros() -> None:
    assert facts("costs 1.5e10 today").numbers == {"1.5e10": 1}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("A dog barks", set()),
        ("US rates", {"us"}),
        ("end.Paris is far", set()),
        ("  Paris is far", set()),
        ("end. Paris is far", set()),
        ("end!Paris? Rome: Oslo; Bern", set()),
        ("see X Paris", {"x", "paris"}),
        ("see 7 Paris", {"paris"}),
        ("a Paris trip", {"paris"}),
        ("A- list", {"a-"}),
    ],
)
def test_a_capitalised_word_is_a_name_only_past_a_sentences_start_and_an_acronym_anywhere(
    text: str, names: set[str]
) -> None:
    assert facts(text).names == names


def test_a_prompt_without_negation_is_not_negated() -> None:
    assert facts("is it safe").negated is False
    assert facts("is it not safe").negated is True


def test_a_name_that_is_every_word_of_the_other_prompt_agrees() -> None:
    assert agrees("USA", "usa")
    assert agrees("usa", "USA")


def test_a_direction_word_with_nothing_on_one_side_states_no_direction() -> None:
    assert facts("upgrade to").directions == frozenset()
    assert agrees("upgrade to", "to upgrade")


def test_the_comparison_word_itself_belongs_to_neither_side() -> None:
    assert facts("rust faster than go").sides == ({"rust", "faster"}, {"go"})


def test_a_comparison_in_one_prompt_only_is_no_swap() -> None:
    assert agrees("rust vs go", "rust and go")
    assert agrees("rust and go", "rust vs go")


@pytest.mark.parametrize(
    ("a", "b"),
    [("rust faster than go", "rust and go faster than c"), ("rust and go faster than c", "rust faster than go")],
)
def test_a_word_crossing_the_comparison_one_way_only_is_no_swap(a: str, b: str) -> None:
    assert agrees(a, b)


INVERTING = {
    "avoid": "avoid avoids avoided avoiding",
    "exclude": "exclude excludes excluded excluding except",
    "stop": "stop stops stopped stopping quit quits quitting",
    "prevent": "prevent prevents prevented preventing",
    "disable": "disable disables disabled disabling",
    "remove": "remove removes removed removing uninstall uninstalls uninstalled uninstalling",
    "block": "block blocks blocked blocking",
    "skip": "skip skips skipped skipping",
    "ignore": "ignore ignores ignored ignoring",
    "cancel": "cancel cancels cancelled canceled cancelling canceling",
    "reduce": "reduce reduces reduced reducing lower lowers lowered lowering",
    "lack": "lack lacks lacked lacking",
}
"""The guard's inverting words, by root: forms of one root say the same, two roots do not."""
INVERTING_FORMS = [(root, form) for root, forms in INVERTING.items() for form in forms.split()]


@pytest.mark.parametrize(("root", "form"), INVERTING_FORMS, ids=[form for _, form in INVERTING_FORMS])
def test_every_inverting_word_turns_the_question_around_and_its_forms_agree(root: str, form: str) -> None:
    assert not agrees(f"tips for {form} sugar", "tips for sugar")
    assert not agrees("tips for sugar", f"tips for {form} sugar")
    assert facts(f"tips for {form} sugar").inverted == {root}
    for other in INVERTING[root].split():
        assert agrees(f"tips for {form} sugar", f"tips for {other} sugar"), other


@pytest.mark.parametrize("root", INVERTING)
def test_two_inverting_roots_are_two_questions(root: str) -> None:
    for other in INVERTING:
        if other != root:
            assert not agrees(f"how to {root} ads", f"how to {other} ads"), other


RELATIVE_TIME = {
    "now": ["now", "currently", "nowadays", "right now", "these days", "at the moment", "at present"],
    "today": ["today"],
    "tonight": ["tonight"],
    "this morning": ["this morning"],
    "this evening": ["this evening"],
    "yesterday": ["yesterday", "last night"],
    "tomorrow": ["tomorrow"],
    "latest": ["latest", "up to date", "up-to-date"],
    "newest": ["newest"],
    "recent": ["recent", "recently", "most recent"],
    "this week": ["this week", "this weekend"],
    "last week": ["last week", "past week"],
    "next week": ["next week"],
    "this month": ["this month"],
    "last month": ["last month", "past month"],
    "next month": ["next month"],
    "this year": ["this year"],
    "last year": ["last year", "past year"],
    "next year": ["next year"],
    "upcoming": ["upcoming", "soon"],
}
"""The guard's relative-time words and phrases, by what they mean."""
TIME_PHRASES = [(meaning, phrase) for meaning, phrases in RELATIVE_TIME.items() for phrase in phrases]


@pytest.mark.parametrize(("meaning", "phrase"), TIME_PHRASES, ids=[phrase for _, phrase in TIME_PHRASES])
def test_every_relative_time_phrase_makes_a_time_bound_question(meaning: str, phrase: str) -> None:
    assert facts(f"gold price {phrase} in euros").times == {meaning}
    assert not agrees(f"gold price {phrase} in euros", "gold price in euros")
    assert not agrees("gold price in euros", f"gold price {phrase} in euros")
    for same in RELATIVE_TIME[meaning]:
        assert agrees(f"gold price {phrase} in euros", f"gold price {same} in euros"), same


@pytest.mark.parametrize("meaning", RELATIVE_TIME)
def test_two_relative_times_are_two_questions(meaning: str) -> None:
    for other, phrases in RELATIVE_TIME.items():
        if other != meaning:
            assert not agrees(f"news {RELATIVE_TIME[meaning][0]}", f"news {phrases[0]}"), other


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("flights from New York to Boston", "flights from Boston to New York", False),
        ("trains from new york to los angeles", "trains from los angeles to new york", False),
        ("drive from san jose into san francisco", "drive from san francisco into san jose", False),
        ("flights from New York to Boston", "New York to Boston flights", True),
        ("flights from New York to Boston", "flights from New York to Boston tonight", False),  # a time, not a swap
        ("convert old svn repos to git", "convert old git repos to svn", False),
    ],
)
def test_the_endpoints_of_a_direction_may_be_several_words(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


def test_the_runs_around_a_direction_word_stop_at_stopwords() -> None:
    assert facts("flights from New York to the Boston area").directions == {
        (frozenset({"new", "york"}), frozenset({"boston", "area"}))
    }


TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
UNITS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize(("word", "value"), list(TENS.items()))
def test_every_tens_word_counts_as_its_digits(word: str, value: int) -> None:
    assert agrees(f"give me {word} ideas", f"give me {value} ideas")
    assert not agrees(f"give me {word} ideas", f"give me {value + 10} ideas")


@pytest.mark.parametrize(("tens", "value"), [("twenty", 20), *TENS.items()])
def test_every_hyphenated_number_counts_as_its_digits(tens: str, value: int) -> None:
    for unit, word in enumerate(UNITS, start=1):
        assert agrees(f"list {tens}-{word} tips", f"list {value + unit} tips"), word
        assert not agrees(f"list {tens}-{word} tips", f"list {value} tips"), word


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("half a cup of rice", "a quarter cup of rice", False),
        ("half a cup of rice", "a cup of rice", False),
        ("a quarter cup of rice", "a cup of rice", False),
        ("twice a week", "double a week", True),
        ("thrice a week", "triple a week", True),
        ("twice a week", "thrice a week", False),
        ("twice a week", "a week", False),
    ],
)
def test_fractions_and_multiples_in_words_are_quantities(a: str, b: str, same: bool) -> None:
    assert agrees(a, b) is same


ASKING = ["how", "why", "when", "where", "who"]
"""The guard's question words that say what a question asks for."""


@pytest.mark.parametrize("word", ASKING)
def test_every_question_word_asks_for_something_else_than_every_other(word: str) -> None:
    assert facts(f"{word} does the tide turn").asks == word
    for other in ASKING:
        same = other == word
        assert agrees(f"{word} does the tide turn", f"{other} does the tide turn") is same, other


@pytest.mark.parametrize("word", ["what", "which"])
def test_what_and_which_ask_for_anything(word: str) -> None:
    assert facts(f"{word} makes the tide turn, and why").asks is None  # the first question word decides
    for other in ASKING:
        assert agrees(f"{word} makes the tide turn", f"{other} does the tide turn"), other


YES_OR_NO = [
    *("is", "are", "was", "were", "am", "can", "could", "do", "does", "did", "will", "would", "should", "shall"),
    *("has", "have", "had", "may", "might", "must"),
]
"""The guard's first words of a yes-or-no question."""


@pytest.mark.parametrize("word", YES_OR_NO)
def test_a_yes_or_no_question_is_not_a_question_word_s(word: str) -> None:
    assert facts(f"{word} the tide turn").asks == "yes or no"
    assert facts(f"why {word} the tide turn").asks == "why"  # only as the first word
    for other in ASKING:
        assert not agrees(f"{word} the tide turn", f"{other} {word} the tide turn"), other
    assert agrees(f"{word} the tide turn", f"what {word} the tide turn")
    assert agrees(f"{word} the tide turn", "is the tide turning")


def test_a_prompt_without_a_question_word_asks_for_nothing_in_particular() -> None:
    assert facts("tide turning explained").asks is None
    assert agrees("tide turning explained", "why does the tide turn")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("convert dollars to rupees", "convert a rupee to dollars"),
        ("how can I convert dollar to rupees", "how can I convert rupees to dollars"),
        ("move my cities into regions", "move a region into a city"),
        ("are cats smarter than dogs", "is a dog smarter than a cat"),
    ],
)
def test_a_swap_is_a_swap_whatever_the_number_of_its_nouns(a: str, b: str) -> None:
    assert not agrees(a, b)


@pytest.mark.parametrize(
    ("word", "lemma"),
    [
        ("dollars", "dollar"),
        ("cities", "city"),
        ("dogs", "dog"),
        ("class", "class"),
        ("virus", "virus"),
        ("analysis", "analysis"),
        ("gas", "gas"),
        ("ties", "tie"),
    ],
)
def test_the_sides_of_a_direction_are_read_in_the_singular(word: str, lemma: str) -> None:
    assert facts(f"{word} to gold").directions == {(frozenset({lemma}), frozenset({"gold"}))}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Is it n\u200bot safe to eat raw eggs?", "Is it safe to eat raw eggs?"),  # zero-width space
        ("Is it n\u2060ot safe to eat raw eggs?", "Is it safe to eat raw eggs?"),  # word joiner
        ("Convert 1\u200c0 USD to EUR", "Convert 1 USD to EUR"),  # zero-width non-joiner
        ("Is it n\x00ot safe to eat raw eggs?", "Is it safe to eat raw eggs?"),  # a control character
    ],
)
def test_characters_nobody_sees_hide_no_fact_from_the_guard(a: str, b: str) -> None:
    # The embedding model drops them (`n<zero-width space>ot` embeds as `not`), and so does the reader
    # upstream: a caller must not store an answer to `not safe` that another is served for `safe`.
    assert not agrees(a, b) and not agrees(b, a)


def test_the_guard_reads_a_text_as_the_model_does_without_its_invisible_characters() -> None:
    assert agrees("What is 1\u200b0 plus 5?", "What is 10 plus 5?")

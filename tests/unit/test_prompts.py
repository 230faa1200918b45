"""AUTOMATIC1111's prompt syntax: <lora:...> tags and emphasis, by example and by property."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spatiora_tui.prompts import LoraTag, PromptError, extract_lora_tags, mentions, parse_emphasis, plain_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red car", [("a red car", 1.0)]),
        ("a (red) car", [("a ", 1.0), ("red", 1.1), (" car", 1.0)]),
        ("((house))", [("house", 1.1 * 1.1)]),
        ("[x]", [("x", 1 / 1.1)]),
        ("a (red:1.5) car", [("a ", 1.0), ("red", 1.5), (" car", 1.0)]),
        ("(a (b:2) c)", [("a ", 1.1), ("b", 2.2), (" c", 1.1)]),
        ("(word: 0.5 )", [("word", 0.5)]),
        ("a (b", [("a ", 1.0), ("b", 1.1)]),  # unclosed: the rest of the prompt
        ("a [b", [("a ", 1.0), ("b", 1 / 1.1)]),
        ("a) b]", [("a) b]", 1.0)]),  # stray closers are text
        (r"\(literal\) \[x\]", [("(literal) [x]", 1.0)]),
        ("x:1.2) y", [("x:1.2) y", 1.0)]),  # a weight outside brackets is text
        ("(x:1.2.3)", [("x:1.2.3)", 1.1)]),  # not a number: text (A1111 raises here)
        ("(x:-1)", [("x", -1.0)]),  # negative weights are A1111's too
        ("", [("", 1.0)]),
    ],
)
def test_emphasis_follows_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_emphasis(text)
    assert [run[0] for run in got] == [f for f, _ in expected]
    assert [run[1] for run in got] == pytest.approx([w for _, w in expected])


def test_break_starts_a_new_chunk_and_is_not_read() -> None:
    assert parse_emphasis("a BREAK (b)") == [("a", 1.0), None, ("b", pytest.approx(1.1))]
    assert plain_text("a BREAK b") == "ab"


def test_lora_tags_are_taken_out_and_listed() -> None:
    text, tags = extract_lora_tags("a loft <lora:oak_floor:0.6>, bright, <lyco:detail> (sunlight:1.2)")
    assert text == "a loft, bright, (sunlight:1.2)"
    assert tags == (LoraTag("oak_floor", 0.6, "<lora:oak_floor:0.6>"), LoraTag("detail", 1.0, "<lyco:detail>"))
    assert extract_lora_tags("no tags here, (x:1.1)") == ("no tags here, (x:1.1)", ())


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("<lora::0.5>", "names no LoRA"),
        ("<lora:oak:heavy>", "the weight 'heavy' is not a number"),
        ("<lora:oak:7>", "between -5 and 5"),
        ("<lora:oak:nan>", "between -5 and 5"),
        ("<lora:oak:0.5:0.8>", "separate text-encoder and UNet weights"),
        ("<lora:oak:te=0.5>", "separate text-encoder and UNet weights"),
        ("<hypernet:style:1>", "<hypernet:...> networks are not supported"),
        ("<lora:oak> and <lora:oak:0.2>", "appears twice"),
    ],
)
def test_a_tag_spatiora_cannot_honour_is_refused_with_the_tag_quoted(prompt: str, fragment: str) -> None:
    with pytest.raises(PromptError) as info:
        extract_lora_tags(prompt)
    assert fragment in str(info.value) and str(info.value).startswith("<")


def test_embedding_names_are_found_as_words_only() -> None:
    assert mentions("easynegative, blurry, bad-hands-5", ["easynegative", "bad-hands-5", "hands", "blur"]) == [
        "easynegative",
        "bad-hands-5",
    ]


# -- properties over generated prompts --------------------------------------------------------

SYNTAX = st.sampled_from(
    [
        "(",
        ")",
        "[",
        "]",
        ":",
        "\\",
        "<",
        ">",
        "lora",
        "BREAK",
        ",",
        " ",
        "1.5",
        "-0.3",
        ".",
        "<lora:",
        "<lora:x:",
        "oak",
        "é",
        "\x00",
        "\n",
        "(word:1.2)",
        "\\(",
        "<lyco:",
    ]
)
PROMPTS = st.lists(st.one_of(SYNTAX, st.text(max_size=8)), max_size=40).map("".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROMPTS)
def test_any_prompt_parses_to_runs_of_finite_weight_or_a_clean_refusal(prompt: str) -> None:
    try:
        text, tags = extract_lora_tags(prompt)
    except PromptError as exc:
        assert str(exc).startswith("<") and "\n" not in str(exc)
        return
    for tag in tags:
        assert tag.name and -5 <= tag.weight <= 5 and tag.text in prompt
    runs = parse_emphasis(text)
    assert runs
    for run in runs:
        assert run is None or (isinstance(run[0], str) and math.isfinite(run[1]))
    # Nothing the model reads is invented: every character comes from the prompt.
    read = plain_text(text)
    assert set(read) <= set(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="()[]:\\<>"), max_size=200))
def test_text_without_syntax_is_read_unchanged_at_weight_one(text: str) -> None:
    assume("BREAK" not in text)
    assert parse_emphasis(text) == [(text, 1.0)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc ", min_size=1, max_size=20), st.floats(0.05, 4.0))
def test_a_weighted_group_carries_exactly_its_weight(words: str, weight: float) -> None:
    runs = parse_emphasis(f"({words}:{weight:.3f})")
    assert runs == [(words, pytest.approx(float(f"{weight:.3f}")))]  # type: ignore[comparison-overlap]  # approx compares

"""Parsing answers and applying SEARCH/REPLACE edits strictly (before/after fixtures)."""

from __future__ import annotations

import pytest

from evo.llm.edits import AnswerError, Edit, EditError, apply_edits, parse_answer
from evo.llm.prices import UnknownModelPriceError, parse_price, price_for

PARENT = """\
import math

# ---- hyperparameters
LR = 0.04  # learning rate
MATRIX_LR = 0.04  # learning rate of matrices
WIDTH = 256  # model width


def step(x):
    return x * LR


def other(x):
    return x * LR
"""


def _answer(*blocks: tuple[str, str], description: str = "lower LR") -> str:
    body = "".join(f"<<<<<<< SEARCH\n{s}=======\n{r}>>>>>>> REPLACE\n" for s, r in blocks)
    return f"DESCRIPTION: {description}\n{body}"


@pytest.mark.parametrize(
    ("blocks", "after"),
    [
        pytest.param(
            [("LR = 0.04  # learning rate\n", "LR = 0.02  # learning rate\n")],
            PARENT.replace("LR = 0.04  # learning rate\n", "LR = 0.02  # learning rate\n", 1),
            id="one line, anchored at the line start (MATRIX_LR untouched)",
        ),
        pytest.param(
            [("WIDTH = 256  # model width\n", "WIDTH = 512  # model width\n"),
             ("def step(x):\n    return x * LR\n", "def step(x):\n    return x * LR * 2\n")],
            PARENT.replace("WIDTH = 256", "WIDTH = 512").replace(
                "def step(x):\n    return x * LR\n", "def step(x):\n    return x * LR * 2\n"),
            id="two blocks",
        ),
        pytest.param(
            [("import math\n\n", "")],
            PARENT.replace("import math\n\n", ""),
            id="a deletion",
        ),
    ],
)
def test_edits_apply(blocks, after):
    answer = parse_answer(_answer(*blocks))
    assert answer.description == "lower LR"
    assert apply_edits(PARENT, answer.edits) == after


def test_a_search_block_that_does_not_match_fails_with_the_nearest_lines():
    answer = parse_answer(_answer(
        ("WIDTH = 256  # model width\n", "WIDTH = 512  # model width\n"),
        ("LR = 0.05  # learning rate\n", "LR = 0.02  # learning rate\n"),
    ))
    with pytest.raises(EditError) as info:
        apply_edits(PARENT, answer.edits)
    message = str(info.value)
    assert message.startswith("edit 2: its SEARCH text does not occur in the parent")
    assert "    4 | LR = 0.04  # learning rate" in message  # the nearest line, numbered


def test_whitespace_differences_are_named():
    edits = (Edit("def step(x):\n  return x * LR\n", "def step(x):\n  return x\n"),)
    with pytest.raises(EditError, match="matches if whitespace is ignored"):
        apply_edits(PARENT, edits)


def test_an_ambiguous_search_block_fails_with_its_lines():
    edits = (Edit("    return x * LR\n", "    return x * LR / 2\n"),)
    with pytest.raises(EditError, match=r"edit 1: its SEARCH text occurs 2 times in the parent \(at lines 10, 14\)"):
        apply_edits(PARENT, edits)


def test_overlapping_blocks_fail():
    edits = (Edit("LR = 0.04  # learning rate\nMATRIX_LR = 0.04  # learning rate of matrices\n", "LR = 0.1\n"),
             Edit("MATRIX_LR = 0.04  # learning rate of matrices\n", "MATRIX_LR = 0.1\n"))
    with pytest.raises(EditError, match="edits 1 and 2 overlap"):
        apply_edits(PARENT, edits)


def test_edits_that_change_nothing_fail():
    edits = (Edit("WIDTH = 256  # model width\n", "WIDTH = 256  # model width\n"),)
    with pytest.raises(EditError, match="unchanged"):
        apply_edits(PARENT, edits)


def test_an_empty_search_block_fails():
    with pytest.raises(EditError, match="empty"):
        apply_edits(PARENT, (Edit("\n", "x = 1\n"),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("I would lower the learning rate.", "no `DESCRIPTION"),
        ("DESCRIPTION: lower LR\nJust lower it.", "no `<<<<<<< SEARCH`"),
        ("DESCRIPTION: lower LR\n<<<<<<< SEARCH\nLR = 0.04\n>>>>>>> REPLACE\n", "no `=======`"),
        ("DESCRIPTION: lower LR\n<<<<<<< SEARCH\nLR = 0.04\n=======\nLR = 0.02\n", "no closing"),
        ("DESCRIPTION:\n<<<<<<< SEARCH\nA\n=======\nB\n>>>>>>> REPLACE\n", "no `DESCRIPTION"),
    ],
)
def test_malformed_answers_are_answer_errors(text, message):
    with pytest.raises(AnswerError, match=message):
        parse_answer(text)


def test_answers_in_markdown_fences_and_bold_descriptions_parse():
    text = ("Here is my change.\n\n**DESCRIPTION:** halve LR\n\n```python\n<<<<<<< SEARCH\n"
            "LR = 0.04  # learning rate\n=======\nLR = 0.02  # learning rate\n>>>>>>> REPLACE\n```\n")
    answer = parse_answer(text)
    assert answer.description == "halve LR"
    assert apply_edits(PARENT, answer.edits).count("LR = 0.02  # learning rate") == 1


def test_rewrite_answers_carry_the_whole_file():
    answer = parse_answer(f"DESCRIPTION: wider\n```python\n{PARENT.replace('256', '512')}```\n", rewrite=True)
    assert answer.code == PARENT.replace("256", "512") and answer.description == "wider"
    with pytest.raises(AnswerError, match="fenced"):
        parse_answer("DESCRIPTION: wider\nWIDTH = 512\n", rewrite=True)


def test_prices_are_known_or_given_never_zero():
    assert price_for("claude-sonnet-4-5").cost_usd(1_000_000, 1_000_000) == pytest.approx(18.0)
    with pytest.raises(UnknownModelPriceError, match="--llm-price"):
        price_for("claude-imaginary-9")
    assert price_for("claude-imaginary-9", (1, 2)).cost_usd(500_000, 500_000) == pytest.approx(1.5)
    assert parse_price("3, 15") == (3.0, 15.0)
    with pytest.raises(ValueError):
        parse_price("3")


def test_pathological_nesting_is_an_invalid_genome_not_a_crash():
    """libcst's native parser crashes the process on 100,000 nested unary minus signs;
    validate() lets CPython's compiler refuse such code first."""
    import subprocess
    import sys

    code = (
        "from evo.genome import InvalidGenomeError, validate\n"
        "try:\n"
        "    validate('x = ' + '-' * 100000 + '1\\n')\n"
        "except InvalidGenomeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("refused: genome does not compile")

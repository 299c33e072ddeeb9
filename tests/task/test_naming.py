"""Workflow names and DAG ids: allowed characters, length, clear errors."""

import pytest
from dkist_processing_core.naming import MAX_WORKFLOW_NAME_LENGTH
from dkist_processing_core.naming import NamingError
from dkist_processing_core.naming import dag_name
from dkist_processing_core.naming import validate_name_part
from dkist_processing_core.naming import workflow_name
from hypothesis import given
from hypothesis import strategies as st

ALLOWED = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=20)


def test_seed_form():
    assert workflow_name(process_category="My", process_name="Workflow") == "My_Workflow"


def test_data_form_with_and_without_detail():
    assert workflow_name("l0", "l1", "visp") == "l0_to_l1_visp"
    assert workflow_name("l0", "l1", "visp", "polcal") == "l0_to_l1_visp_polcal"
    assert (
        workflow_name(input_data="l0", output_data="l1", category="visp", detail=None)
        == "l0_to_l1_visp"
    )


def test_the_two_forms_cannot_be_mixed():
    with pytest.raises(NamingError, match="either process_category/process_name or input_data"):
        workflow_name("l0", "l1", "visp", process_category="My", process_name="Workflow")


def test_dag_name_is_name_and_version():
    assert dag_name("l0_to_l1_visp", "2.1.0") == "l0_to_l1_visp_2.1.0"
    assert dag_name(workflow_name="My_Workflow", workflow_version="dev") == "My_Workflow_dev"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bad name", "has the character ' ' at position 3"),
        ("semi;colon", "has the character ';' at position 4"),
        ("quote'", 'has the character "\'" at position 5'),
        ("ünicode", "has the character 'ü' at position 0"),
        ("", "must not be empty"),
    ],
)
def test_errors_say_which_character_is_wrong(value, message):
    with pytest.raises(NamingError) as caught:
        validate_name_part(value, "process_name")
    assert message in str(caught.value)
    assert "process_name" in str(caught.value)


def test_non_text_is_refused():
    with pytest.raises(NamingError, match="process_name must be a string, got int 5"):
        workflow_name(process_category="My", process_name=5)


def test_workflow_name_length_limit():
    part = "a" * (MAX_WORKFLOW_NAME_LENGTH // 2)
    assert (
        len(workflow_name(process_category=part, process_name=part[:-2]))
        == MAX_WORKFLOW_NAME_LENGTH - 1
    )
    with pytest.raises(NamingError, match=f"the limit is {MAX_WORKFLOW_NAME_LENGTH}"):
        workflow_name(process_category=part, process_name=part)


def test_bad_version_is_named_in_the_error():
    with pytest.raises(NamingError, match="workflow version '1.0 beta' has the character ' '"):
        dag_name("My_Workflow", "1.0 beta")


def test_naming_error_is_a_value_error():
    assert issubclass(NamingError, ValueError)


@given(category=ALLOWED, name=ALLOWED)
def test_any_allowed_parts_make_a_valid_dag_name(category, name):
    if len(category) + len(name) + 1 > MAX_WORKFLOW_NAME_LENGTH:
        return
    result = dag_name(workflow_name(process_category=category, process_name=name), "1.0")
    assert result == f"{category}_{name}_1.0"
    assert validate_name_part(result, "dag id") == result


@given(text=st.text(min_size=1, max_size=30))
def test_validation_accepts_exactly_the_allowed_alphabet(text):
    allowed = all(
        character.isascii() and (character.isalnum() or character in "._-") for character in text
    )
    if allowed:
        assert validate_name_part(text, "part") == text
    else:
        with pytest.raises(NamingError):
            validate_name_part(text, "part")

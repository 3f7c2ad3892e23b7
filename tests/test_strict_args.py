"""check_known_args: unknown, misspelled or abbreviated flags and stray values stop the run."""

from __future__ import annotations

import argparse
import gc
from collections.abc import Iterator

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.strict_args import UnknownOptionError, check_known_args


@pytest.fixture(autouse=True)
def toy_options() -> Iterator[None]:
    """A PipelineOptions subclass alive only during one test.

    Beam's get_all_options (run by every ``Pipeline.run``) puts the flags of all subclasses
    into one parser and raises on a flag defined twice, so a class that outlives the test
    and repeats ``--stride`` of the project's options would break later pipeline tests.
    The class is not yielded: pytest would keep a reference to it.
    """

    class ToyOptions(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--stride", type=int, default=None)
            parser.add_argument("--size", type=int, default=None, required=True)
            parser.add_argument("--box-size", dest="box_size", type=int, default=None)
            parser.add_argument("--no-metrics", dest="metrics", action="store_false")

    assert ToyOptions in PipelineOptions.__subclasses__()
    yield
    del ToyOptions
    gc.collect()
    assert not any(c.__name__ == "ToyOptions" for c in PipelineOptions.__subclasses__())


def message(argv: list[str]) -> str:
    with pytest.raises(UnknownOptionError) as info:
        check_known_args(argv)
    return str(info.value)


def test_misspelled_flag_is_named_with_a_suggestion():
    assert message(["--strdie", "4", "--size", "24"]) == (
        "unknown option --strdie (did you mean --stride?)")


def test_unknown_option_error_is_a_value_error():
    with pytest.raises(ValueError):
        check_known_args(["--strdie", "4"])


@pytest.mark.parametrize("argv", [
    ["--stride=4"],
    ["--stride", "4", "--size", "24", "--box-size", "8", "--no-metrics"],
    ["--box-size=-3", "--stride", "-2"],  # values that start with a dash
    [],
    ["--size", "24", "--"],
])
def test_own_flags_pass(argv: list[str]):
    check_known_args(argv)


def test_check_is_about_names_not_values_or_required_flags():
    check_known_args(["--stride", "four"])  # the real parse reports the bad int
    check_known_args(["--stride", "4"])  # --size is required, but not this check's business


def test_beams_own_flags_pass():
    check_known_args([
        "--runner=FnApiRunner", "--direct_num_workers=2",
        "--direct_running_mode=multi_processing", "--job_endpoint=embed",
        "--environment_type=EXTERNAL", "--environment_config=localhost:5",
        "--setup_file", "./setup.py", "--stride", "4",
        "--experiments", "a", "--experiments=b", "--flink_master=localhost:8081",
        "--prism_log_level", "info", "--spark_master_url", "local[2]",
    ])


def test_abbreviation_is_unknown():
    assert message(["--strid", "4"]).startswith("unknown option --strid ")
    assert message(["--box", "4"]).startswith("unknown option --box")


def test_spelling_must_be_the_registered_one():
    assert message(["--box_size", "3"]) == "unknown option --box_size (did you mean --box-size?)"
    assert message(["--direct-num-workers", "2"]).startswith(
        "unknown option --direct-num-workers (did you mean --direct_num_workers?)")


def test_far_off_flag_has_no_suggestion():
    assert message(["--zzzzqq", "1"]) == "unknown option --zzzzqq"


def test_equals_form_of_an_unknown_flag_names_the_flag_only():
    assert message(["--stride=4", "--strdie=4"]) == (
        "unknown option --strdie (did you mean --stride?)")


def test_stray_positional():
    assert message(["--stride", "4", "clip.mp4"]) == "unexpected argument clip.mp4"
    assert message(["--no-metrics", "false"]) == "unexpected argument false"  # takes no value
    assert message(["--", "x"]) == "unexpected argument x"


def test_value_that_looks_like_a_flag_is_not_reported():
    check_known_args(["--environment_config=--strdie"])
    check_known_args(["--environment_options", "-x y"])
    # argparse (and so Beam, which then exits with its usage text) takes "--strdie" for a
    # flag here: the error is the missing value, not an unknown --strdie
    assert message(["--job_name", "--strdie"]) == "argument --job_name: expected one argument"


def test_extra_flags_are_accepted():
    check_known_args(["--checkpointing_interval", "10"], extra_flags=["--checkpointing_interval"])


def test_runner_module_options_are_imported_for_a_dotted_runner():
    check_known_args(["--runner", "apache_beam.runners.render.RenderRunner",
                      "--render_output", "pipeline.png"])

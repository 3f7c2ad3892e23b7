"""Options declared once (:class:`transforms.options.Option`): a toy method with one option,
declared and registered in this file only, reaches the command line, the validated
configuration, the method, the hash keys and the tables; ``--help`` reads the same
declarations without importing torch or Beam; the README's options table is the generated one.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import (
    RunConfig,
    declared_options,
    hash_options,
    identity_table,
    options_table,
    placed,
)
from pipeline.flags import builtin_methods, help_options
from pipeline.options import VidxaiOptions, config_from_options
from pipeline.strict_args import UnknownOptionError, check_known_args
from tests.test_config_identity import marked_block
from tests.test_tubes import translating_clip
from transforms.explain import explain_clip
from transforms.flow import farneback_flow
from transforms.methods.base import (
    METHODS,
    Explanation,
    Method,
    MethodOptions,
    available_methods,
    get_method,
)
from transforms.options import COMMON, Option, at_least
from transforms.records import ClipData, ClipRef, ClipTubes
from transforms.tubes import build_tubes

ROOT = Path(__file__).resolve().parents[1]

# --- A method with one option: everything it takes is in these lines -------------------------

TOY_LEVEL = Option("toy_level", float, 1.0, "toy: the value of its constant map",
                   check=at_least(0.5))


class Toy(Method):
    """A constant map of ``--toy-level``."""

    name = "toy"
    uses_network = False
    reads = (TOY_LEVEL,)

    def explain(self, engine, tubes) -> Explanation:
        return Explanation(torch.full(engine.frame_shape, self.options.toy_level))


@pytest.fixture
def toy(monkeypatch):
    """Toy registered for one test only (other tests enumerate every method)."""
    monkeypatch.setitem(METHODS, "toy", Toy)


def run_config(*flags: str) -> RunConfig:
    argv = ["--input", "in", "--output", "out", "--size", "24", "--num-frames", "8", *flags]
    check_known_args(argv)
    return config_from_options(VidxaiOptions(argv)).replace(weights_sha256="0" * 64)


def test_a_method_option_reaches_the_command_line_and_the_method(toy):
    cfg = run_config("--methods", "aosa,toy", "--toy-level", "2.5")
    assert cfg.toy_level == 2.5 and cfg.method_options().toy_level == 2.5
    frames = translating_clip(1, 0, frames=8, size=24)
    tubes = build_tubes(farneback_flow(frames), cfg.stride, (cfg.box_size,) * 2, cfg.topk)
    item = ClipTubes(ClipData(ClipRef("clip", "clip.avi"), frames), tubes)
    settings = cfg.explain_settings()
    methods = [get_method(m, settings.method_options) for m in cfg.methods]
    result = explain_clip(cfg.handler().load_model(), item, methods, settings)
    toy_map = result.methods[1].saliency
    assert toy_map.shape == (8, 24, 24) and (toy_map == 2.5).all()
    assert run_config("--methods", "toy").toy_level == 1.0  # the declared default


def test_a_method_option_is_validated_with_its_flag(toy):
    with pytest.raises(ValueError, match=r"^--toy-level must be >= 0.5, got 0.1$"):
        run_config("--methods", "toy", "--toy-level", "0.1")


def test_a_method_option_enters_the_hash_of_its_method_only(toy):
    assert hash_options("toy") == placed(COMMON) + ("toy_level",)
    cfg = run_config("--methods", "aosa,toy")
    other = cfg.replace(toy_level=3.0)
    assert cfg.config_hash("toy") != other.config_hash("toy")
    assert cfg.config_hash("aosa") == other.config_hash("aosa")
    assert cfg.config_hash() != other.config_hash()  # the run's hash covers its methods'


def test_a_method_option_is_in_both_tables(toy):
    assert ("| `--toy-level` | `1.0` | toy: the value of its constant map | `toy` |"
            in options_table().splitlines())
    assert "| `toy` | `--toy-level` | - |" in identity_table().splitlines()


def test_an_unregistered_method_option_is_an_unknown_flag():
    assert "toy_level" not in declared_options()
    with pytest.raises(UnknownOptionError, match="--toy-level"):
        check_known_args(["--toy-level", "2"])
    with pytest.raises(TypeError, match="toy_level"):
        MethodOptions(toy_level=2.0)


def test_cross_option_checks_name_both_flags():
    base = dict(input="in", output="out", size=24, num_frames=8)
    with pytest.raises(ValueError, match=r"^--t-hop 5 > --t-window 3 would leave frames"):
        RunConfig(**base, t_window=3, t_hop=5).resolve()
    with pytest.raises(ValueError, match=r"^--t-window must be in \[1, 8\], got 9$"):
        RunConfig(**base, t_window=9).resolve()
    with pytest.raises(ValueError, match=r"^--topk must be in \[0, 15\] \(16 masks at stride 6"):
        RunConfig(**base, stride=6, topk=16).resolve()
    with pytest.raises(ValueError, match="^--clips-per-video and --clip-hop exclude each other"):
        RunConfig(**base, clips_per_video=2, clip_hop=4).resolve()


def test_configs_are_frozen_and_survive_pickling():
    cfg = RunConfig(input="in", output="out", size=24, num_frames=8).resolve()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.size = 32
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and hash(again) == hash(cfg) and again.stride == cfg.stride == 1
    options = pickle.loads(pickle.dumps(cfg.method_options()))
    assert options == cfg.method_options() and options.fill_sigma == pytest.approx(5 * 24 / 112)


def described(option: Option) -> tuple:
    return option.name, option.flag, option.type, option.default, option.help, option.place


def test_help_reads_the_declarations_the_run_imports():
    """``--help`` reads the methods' declarations from their source (no torch import)."""
    assert sorted(map(described, help_options())) == sorted(
        map(described, declared_options().values()))


def test_the_methods_help_names_the_registered_methods():
    assert builtin_methods() == tuple(available_methods())


def test_help_lists_every_flag_without_importing_torch_or_beam():
    code = ("import sys, run_pipeline; run_pipeline.print_help(); "
            "print(sorted(m for m in ('torch', 'apache_beam') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
    listed = {w.rstrip(",") for line in out.splitlines() for w in line.split()
              if w.startswith("--")}
    assert {o.flag for o in declared_options().values() if o.flag} <= listed


def test_the_docs_hold_the_generated_options_table():
    block = marked_block("<!-- options-table -->", "<!-- /options-table -->")
    assert block is not None, (
        "no options table yet: put <!-- options-table --> and <!-- /options-table --> around "
        "the options section of README.md (or a docs/*.md file) with the output of "
        "python -c 'from pipeline.config import options_table; print(options_table())' "
        "between them (docs/_options_table.md holds it)")
    assert block == options_table(), (
        "the options table is stale: replace the block between the markers with the output of "
        "python -c 'from pipeline.config import options_table; print(options_table())'")

"""Model registry: torchvision presets, safe checkpoint bytes, bring-your-own factories."""

from __future__ import annotations

import io
import os
import pickle
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save
from torch import nn
from torchvision.models import video as tvv

from models import (
    build_model,
    build_network,
    factory_spec,
    get_spec,
    is_factory,
    load_checkpoint,
    load_factory,
    load_state_dict_strict,
    state_dict_from_bytes,
)
from models.i3d import kinetics400_class_names
from tests.user_models import SmallNet

TORCHVISION = {  # registry name -> torchvision weights enum (presets and categories only)
    "r3d_18": tvv.R3D_18_Weights.KINETICS400_V1,
    "mc3_18": tvv.MC3_18_Weights.KINETICS400_V1,
    "r2plus1d_18": tvv.R2Plus1D_18_Weights.KINETICS400_V1,
    "s3d": tvv.S3D_Weights.KINETICS400_V1,
    "mvit_v2_s": tvv.MViT_V2_S_Weights.KINETICS400_V1,
    "swin3d_t": tvv.Swin3D_T_Weights.KINETICS400_V1,
}
CNN_FEATURES = {  # Grad-CAM layer output (C, T', H', W') at the preset input
    "r3d_18": (512, 2, 7, 7),
    "mc3_18": (512, 16, 7, 7),  # 3D convolutions only in the stem: time is not pooled
    "r2plus1d_18": (512, 2, 7, 7),
    "s3d": (1024, 2, 7, 7),
}
USER = "tests.user_models"


@cache
def _network(name: str) -> nn.Module:
    """One seeded network per name for the whole module (the transformers are slow to build)."""
    return build_network(get_spec(name))


# --- torchvision networks -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_spec_copies_the_weights_preset(name: str) -> None:
    spec, weights = get_spec(name), TORCHVISION[name]
    preset = weights.transforms()
    assert list(spec.mean) == pytest.approx(preset.mean)
    assert list(spec.std) == pytest.approx(preset.std)
    assert [spec.input_size] * 2 == preset.crop_size
    assert round(spec.input_size * spec.resize_ratio) == preset.resize_size[0]
    assert spec.num_classes == len(weights.meta["categories"]) == 400
    # torchvision's categories are exactly the bundled Kinetics-400 list, in logit order.
    assert spec.class_names() == list(weights.meta["categories"]) == kinetics400_class_names()
    assert spec.min_frames == weights.meta.get("min_temporal_size", 1) <= spec.num_frames == 16
    assert spec.weights_note and spec.description


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_network_gives_kinetics_logits_at_its_preset(name: str) -> None:
    spec, net = get_spec(name), _network(name)
    assert not net.training
    batch = 2 if spec.input_size == 112 else 1  # one 16x224x224 forward for the big ones
    x = torch.randn(batch, 3, spec.num_frames, spec.input_size, spec.input_size)
    if spec.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    feats: dict[str, torch.Size] = {}
    if name in CNN_FEATURES:
        layer = net.get_submodule(spec.gradcam_layer)
        handle = layer.register_forward_hook(lambda m, i, out: feats.update(map=out.shape))
    else:
        assert spec.gradcam_layer is None  # token layouts, not (C, T, H, W) maps
    with torch.no_grad():
        out = net(x)
    if name in CNN_FEATURES:
        handle.remove()
        assert feats["map"] == (batch, *CNN_FEATURES[name])
    assert out.shape == (batch, 400) and torch.isfinite(out).all()


def test_fixed_input_marks_the_network_that_fails_off_preset() -> None:
    assert [n for n in TORCHVISION if get_spec(n).fixed_input] == ["mvit_v2_s"]
    x = torch.randn(1, 3, 8, 112, 112)
    with torch.no_grad():
        assert _network("swin3d_t")(x).shape == (1, 400)  # swin pads its windows
        with pytest.raises(RuntimeError):
            _network("mvit_v2_s")(x)  # positional embeddings sized for 16x224x224


def test_build_network_is_seeded_and_in_eval_mode() -> None:
    spec = get_spec("tiny")
    a, b, c = build_network(spec), build_network(spec), build_network(spec, seed=1)
    assert not a.training
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert build_network(spec, num_classes=7).fc.out_features == 7
    model, same = build_model("tiny")
    assert same is spec and torch.equal(model.fc.weight, a.fc.weight)


# --- checkpoint bytes -----------------------------------------------------------------------

def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return SmallNet(3).state_dict()


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_state_dict_round_trips_torch_and_safetensors(state) -> None:
    _assert_same(state_dict_from_bytes(_torch_bytes(state), "net.pt"), state)
    _assert_same(state_dict_from_bytes(safetensors_save(dict(state)), "net.safetensors"), state)
    for key in ("state_dict", "model"):
        wrapped = _torch_bytes({key: state, "epoch": 7, "optimizer": {"lr": 0.1}})
        _assert_same(state_dict_from_bytes(wrapped, "train.ckpt"), state)
    net = SmallNet(3)
    load_state_dict_strict(net, state_dict_from_bytes(_torch_bytes(state), "net.pt"), "net.pt")
    _assert_same(net.state_dict(), state)


class _RunsCode:
    """Unpickling this calls os.system (a classic malicious checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_state_dict_refuses_pickled_code_without_running_it(tmp_path: Path, state) -> None:
    marker = tmp_path / "pwned"
    payloads = {"evil.pt": _torch_bytes({**state, "x": _RunsCode(marker)}),
                "evil.pkl": pickle.dumps(_RunsCode(marker), protocol=2)}
    for name, data in payloads.items():
        with pytest.raises(ValueError, match=rf"checkpoint {name} cannot be read safely"):
            state_dict_from_bytes(data, name)
    assert not marker.exists()


def test_state_dict_rejects_what_is_not_a_state_dict(state) -> None:
    with pytest.raises(ValueError, match="checkpoint junk.pt is neither a torch checkpoint"):
        state_dict_from_bytes(b"not a checkpoint" * 8, "junk.pt")
    with pytest.raises(ValueError, match="junk.safetensors is not a readable safetensors"):
        state_dict_from_bytes(b"not a checkpoint" * 8, "junk.safetensors")
    with pytest.raises(ValueError, match=r"list.pt does not hold a state_dict \(found list"):
        state_dict_from_bytes(_torch_bytes(list(state.values())), "list.pt")
    with pytest.raises(ValueError, match=r"mixed.pt .*\['lr'\] are not named tensors"):
        state_dict_from_bytes(_torch_bytes({**state, "lr": 0.1}), "mixed.pt")
    with pytest.raises(ValueError, match="empty.pt does not hold a state_dict"):
        state_dict_from_bytes(_torch_bytes({}), "empty.pt")


def test_non_fitting_state_dict_is_reported(state) -> None:
    renamed = {k.replace("fc.", "head."): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"renamed.pt does not fit the network: missing "
                                         r"\['fc.weight', 'fc.bias'\], unexpected "
                                         r"\['head.weight', 'head.bias'\]"):
        load_state_dict_strict(SmallNet(3), renamed, "renamed.pt")
    with pytest.raises(ValueError, match=r"five.pt does not fit the network: .*fc.weight"):
        load_state_dict_strict(SmallNet(5), state, "five.pt")


def test_load_checkpoint_reads_local_files(tmp_path: Path, state) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(SmallNet(3), tmp_path / "missing.pt")
    for path in (tmp_path / "a.pt", tmp_path / "a.safetensors"):
        path.write_bytes(_torch_bytes(state) if path.suffix == ".pt"
                         else safetensors_save(dict(state)))
        net = SmallNet(3)
        load_checkpoint(net, path)
        _assert_same(net.state_dict(), state)
    with pytest.raises(ValueError, match=r"a.pt does not fit"):
        load_checkpoint(SmallNet(4), tmp_path / "a.pt")


# --- bring-your-own factories ---------------------------------------------------------------

@pytest.mark.parametrize(("target", "reason"), [
    ("tests.user_models", "must look like 'package.module:callable'"),
    (":small_net", "must look like"),
    (f"{USER}:", "must look like"),
    (f"{USER}:SmallNet..build", "must look like"),
    ("no_such_pkg_vidxai.nets:net", "cannot import module 'no_such_pkg_vidxai.nets': "
                                    "ModuleNotFoundError: No module named 'no_such_pkg_vidxai'"),
    (f"{USER}:missing", "tests.user_models has no attribute 'missing'"),
    (f"{USER}:SmallNet.nope", "tests.user_models.SmallNet has no attribute 'nope'"),
    ("math:pi", "is a float, not callable"),
])
def test_load_factory_errors_say_why(target: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as err:
        load_factory(target)
    assert "\n" not in str(err.value)


def test_is_factory() -> None:
    assert is_factory(f"{USER}:small_net") and not is_factory("r3d_18")


def test_factory_infers_num_classes_and_builds_with_build_network() -> None:
    spec = factory_spec(f"{USER}:small_net", num_frames=8, size=24, layer="features")
    assert (spec.name, spec.num_classes, spec.gradcam_layer) == (f"{USER}:small_net", 3,
                                                                   "features")
    assert (spec.num_frames, spec.input_size, spec.class_names) == (8, 24, None)
    net = build_network(spec)
    assert isinstance(net, SmallNet) and not net.training
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 8, 24, 24)).shape == (2, 3)
    assert torch.equal(build_network(spec).fc.weight, net.fc.weight)  # seeded
    # Picklable (workers rebuild it) and the dotted-attribute form works too.
    assert pickle.loads(pickle.dumps(spec)).build(3).fc.out_features == 3
    assert factory_spec(f"{USER}:SmallNet.build", num_frames=8, size=24).num_classes == 3


def test_factory_gets_num_classes_only_when_it_takes_it() -> None:
    spec = factory_spec(f"{USER}:small_net", num_frames=8, size=24, num_classes=6,
                        class_names=[f"c{i}" for i in range(6)])
    assert spec.num_classes == 6 and spec.class_names() == [f"c{i}" for i in range(6)]
    assert build_network(spec).fc.out_features == 6
    assert factory_spec(f"{USER}:SmallNet", num_frames=8, size=24, num_classes=2).num_classes == 2
    fixed = f"{USER}:five_class_net"
    assert factory_spec(fixed, num_frames=8, size=24).num_classes == 5
    assert factory_spec(fixed, num_frames=8, size=24, num_classes=5).num_classes == 5
    with pytest.raises(ValueError, match="takes no num_classes parameter .* outputs 5 classes"):
        factory_spec(fixed, num_frames=8, size=24, num_classes=4)


def test_factory_spec_errors() -> None:
    with pytest.raises(ValueError, match="returned a str, not a torch.nn.Module"):
        factory_spec(f"{USER}:not_a_module", num_frames=8, size=24)
    with pytest.raises(ValueError, match=r"must return logits \(1, C\) .* got \(1, 3, 8, 24, 24\)"):
        factory_spec("torch.nn:Identity", num_frames=8, size=24)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        factory_spec(f"{USER}:small_net", num_frames=8, size=24, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"layer 'featurez' is not a module of .*did you mean "
                                         r"\['features'.*top-level modules: \['features', "
                                         r"'pool', 'fc'\]"):
        factory_spec(f"{USER}:small_net", num_frames=8, size=24, layer="featurez")
    with pytest.raises(ValueError, match="cannot import module"):
        factory_spec("no_such_pkg_vidxai:net", num_frames=8, size=24)
    with pytest.raises(ValueError, match="torch.nn:Linear' failed: TypeError"):
        factory_spec("torch.nn:Linear", num_frames=8, size=24)  # needs in/out features
    with pytest.raises(ValueError, match=r"a dry forward on zeros \(1, 3, 8, 24, 24\) failed"):
        factory_spec(f"{USER}:image_net_2d", num_frames=8, size=24)
    with pytest.raises(ValueError, match="need num_frames >= min_frames"):
        factory_spec(f"{USER}:small_net", num_frames=8, size=24, min_frames=9)


def test_the_catalog_lists_exactly_the_registered_networks() -> None:
    """--list-models prints models.catalog without importing torch; it must not drift."""
    from models.catalog import DESCRIPTIONS
    from models.registry import available_models, get_spec

    assert sorted(DESCRIPTIONS) == available_models()
    assert all(get_spec(n).description == DESCRIPTIONS[n] for n in DESCRIPTIONS)

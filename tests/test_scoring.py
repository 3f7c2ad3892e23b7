"""Scorer: preprocessing, memory-format policy, device and precision resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model
from transforms.scoring import Scorer, resolve_device, resolve_precision


def test_to_input_normalises_with_the_spec_and_reorders_axes():
    net, spec = build_model("tiny")
    scorer = Scorer(net, spec, torch.device("cpu"))
    frames = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    frames[1, 2, 3] = (255, 0, 128)
    x = scorer.to_input(frames)
    assert x.shape == (3, 2, 3, 4) and x.is_contiguous()
    # tiny: mean 0.5, std 0.25 -> 255 -> 2.0, 0 -> -2.0, 128 -> (128/255 - .5) / .25
    want = [2.0, -2.0, (128 / 255 - 0.5) / 0.25]
    assert x[:, 1, 2, 3].tolist() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        scorer.to_input(frames.astype(np.float32))


def test_channels_last_policy_does_not_change_the_logits():
    net, spec = build_model("r3d_18")
    assert spec.channels_last
    scorer = Scorer(net, spec, torch.device("cpu"))
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = net(x)
        got = scorer.logits(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_device_and_precision_resolution():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    assert resolve_precision("auto", cuda) is torch.float16
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_metrics_use_the_chosen_insertion_start_image():
    import dataclasses

    from transforms.explain import ExplainSettings, measure
    from transforms.metrics import blurred_baseline
    from transforms.perturbation import PerturbationEngine

    net, spec = build_model("tiny")
    scorer = Scorer(net, spec, torch.device("cpu"))
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    sal = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    base = ExplainSettings(methods=("aosa",), target="predicted", fixed_target=None,
                           batch_size=4, metric_steps=4)
    engine = PerturbationEngine(scorer, x, 1, batch_size=4)
    plain = measure(engine, sal, None, base)
    score = lambda v: float(scorer.probs(v.unsqueeze(0))[0, 1])  # noqa: E731
    assert plain.insertion_curve[0] == pytest.approx(score(torch.zeros_like(x)), abs=1e-6)
    assert plain.deletion_curve[0] == pytest.approx(score(x), abs=1e-6)
    assert plain.insertion_curve[-1] == pytest.approx(score(x), abs=1e-6)
    # 2 × 5 points, of which the two equal to the clean clip reuse its shared score.
    assert plain.spt_rate is None and plain.forward_passes == 8
    assert engine.passes.forward == 1 + 8
    blurred = measure(engine, sal, None, dataclasses.replace(base, insertion_blur=2.0))
    assert blurred.insertion_curve[0] == pytest.approx(score(blurred_baseline(x, 2.0)),
                                                       abs=1e-6)
    assert blurred.deletion_curve == pytest.approx(plain.deletion_curve)

"""Incremental exact inference for occlusion (Nakandala et al., SIGMOD 2019, in 3-D).

An occluded clip differs from the clean clip only where it is occluded. Every layer of a
3D-CNN up to its global pooling is local, so layer by layer only the part of each activation
that the occluded voxels can reach changes: :class:`IncrementalExecutor` runs the clean clip
once, keeps every layer's clean activation, and for a batch of occluded clips recomputes each
convolution and pooling layer only on the output tiles its changed input reaches, copying the
clean activation everywhere else. The output equals a full forward's up to float summation
order.

How (per batch of B clips, activations ``(B, C, T, H, W)``):

* the network is traced once with :mod:`torch.fx` (modules without children are leaves; a
  network fx cannot trace raises ``TypeError``);
* the changed region of the input is measured: the voxels where a clip differs from the clean
  one (float ``(B, 1, T, H, W)``), so no caller has to say what it changed;
* region rules: a convolution or pooling with kernel k, stride s, dilation d and padding p
  changes the outputs whose window meets a changed input cell — per axis
  ``[ceil((a + p − d(k − 1)) / s), floor((b − 1 + p) / s) + 1)`` for
  an input range [a, b); for any region shape :func:`propagate_region` ("any changed cell
  in the window" with the layer's geometry: exact, not a bounding box). Pointwise layers (eval-mode
  batch norm, ReLU, dropout, ...) keep the region; ``+`` and ``torch.cat`` on channels take
  the union. Anything else (global pooling, flatten, the linear head) runs in full and its
  region is "everywhere";
* compute: each layer's output is cut into a grid of tiles (``grid``, default 1 × 14 × 14 in
  T, H, W); the tiles holding a changed cell, over all B clips, are gathered with their input
  halo (the layer's padding read as 0, or −inf for max-pools) into one ``(n, C, t, h, w)``
  batch, run through the layer in one call, and pasted into B copies of the clean output.
  When they cover more than ``threshold`` of the output the layer runs in full instead (its
  region is still tracked, so later layers may go back to tiles). Nodes that follow a conv /
  pool alone and are pointwise in space (batch norm, ReLU, 1 × 1 × 1 stride-1 convs) run on
  its tiles with it;
* memory: each value of a batch is freed after its last reader, as in a plain forward.

Why tiles and not one box per clip: AOSA's integrated masks unite a tube with its K most
co-moving partners, which can sit anywhere in the frame; the bounding box of such a mask
usually covers most of it, so one box per clip saves next to nothing (docs/DESIGN.md, "why
tiles"; the MACs tiles save: docs/BENCHMARKS.md, ``incremental``).

Approximate mode (``keep`` < 1; Krypton's projective-field thresholding, Nakandala et al.,
SIGMOD 2019): after each convolution / pooling, only the changed cells carrying ``keep`` of
the layer's change mass stay in the region later layers recompute (:func:`threshold_region`);
the outputs are then close to, not equal to, a full forward's.

``IncrementalExecutor.macs`` counts the convolution multiply-accumulates actually computed
against those of full forwards (the share of FLOPs saved).

Pure PyTorch (no Beam); the caller owns ``inference_mode`` and autocast (the executor runs its
clean pass and every batch under the caller's context).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from models.i3d import SameConv3d, SameMaxPool3d, same_padding_3d

Triple = tuple[int, int, int]

DEFAULT_THRESHOLD = 0.6
"""A layer whose changed tiles cover more than this share of its output runs in full."""
DEFAULT_GRID: Triple = (1, 14, 14)
"""Tiles per axis (T, H, W) of each layer's output. One tile in T: a tube occludes every
frame, so splitting T only adds temporal halos (docs/DESIGN.md)."""
MIN_TILE = 4
"""Smallest tile side (where the axis is longer): a smaller tile re-reads its halo too often
(2 was 1.5 % faster on I3D, 4 % slower on r3d_18 at ``keep`` 0.9: docs/BENCHMARKS.md)."""

_POINTWISE_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6,
                      nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid,
                      nn.Tanh, nn.Dropout, nn.Dropout3d, nn.Identity)
_POINTWISE_FUNCTIONS = (F.relu, torch.relu, torch.sigmoid, torch.tanh, F.gelu, F.silu)
_POINTWISE_METHODS = ("relu", "sigmoid", "tanh")
_ADD = (operator.add, torch.add, operator.iadd)
_CAT = (torch.cat,)


# --- Pure region rules ----------------------------------------------------------------------


# --- Layer geometry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A sliding-window layer: how it pads, and how it runs on an already padded input."""

    kernel: Triple
    stride: Triple
    dilation: Triple
    pad_before: Triple
    pad_after: Triple
    pad_value: float
    macs_per_output: int  # multiply-accumulates per output cell and batch element (0: pool)
    module: nn.Module

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on an input that already carries its padding."""
        m = self.module
        if isinstance(m, nn.Conv3d):
            return F.conv3d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if isinstance(m, (nn.MaxPool3d, SameMaxPool3d)):
            return F.max_pool3d(x, self.kernel, self.stride, 0, self.dilation)
        return F.avg_pool3d(x, self.kernel, self.stride, 0)


def _triple(v) -> Triple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # type: ignore[return-value]


def window_of(module: nn.Module, in_shape: Sequence[int]) -> Window | None:
    """The :class:`Window` of a supported 3-D conv / pool module, else None.

    Args:
        module: the layer.
        in_shape: its input's shape (B, C, T, H, W) (TensorFlow SAME padding depends on it).
    """
    m = module
    if isinstance(m, SameConv3d) or (isinstance(m, nn.Conv3d)
                                     and type(m).forward is nn.Conv3d.forward):
        if isinstance(m, SameConv3d):
            pads = same_padding_3d(in_shape, m.kernel_size, m.stride)
            before, after = (pads[4], pads[2], pads[0]), (pads[5], pads[3], pads[1])
        elif m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        else:
            before = after = _triple(m.padding)
        macs = (m.in_channels // m.groups) * math.prod(m.kernel_size) * m.out_channels
        return Window(_triple(m.kernel_size), _triple(m.stride), _triple(m.dilation), before,
                      after, 0.0, macs, m)
    if isinstance(m, SameMaxPool3d):
        pads = same_padding_3d(in_shape, m.kernel_size, m.stride)
        return Window(m.kernel_size, m.stride, (1, 1, 1), (pads[4], pads[2], pads[0]),
                      (pads[5], pads[3], pads[1]), float("-inf"), 0, m)
    if isinstance(m, nn.MaxPool3d) and not m.ceil_mode and not m.return_indices:
        pad = _triple(m.padding)
        return Window(_triple(m.kernel_size), _triple(m.stride or m.kernel_size),
                      _triple(m.dilation), pad, pad, float("-inf"), 0, m)
    if (isinstance(m, nn.AvgPool3d) and not m.ceil_mode and m.divisor_override is None
            and (m.count_include_pad or _triple(m.padding) == (0, 0, 0))):
        pad = _triple(m.padding)
        return Window(_triple(m.kernel_size), _triple(m.stride or m.kernel_size), (1, 1, 1),
                      pad, pad, 0.0, 0, m)
    return None


def pads_of(win: Window) -> list[int]:
    """``F.pad`` list ``[W before, W after, H before, H after, T before, T after]``."""
    return [win.pad_before[2], win.pad_after[2], win.pad_before[1], win.pad_after[1],
            win.pad_before[0], win.pad_after[0]]


def propagate_region(region: torch.Tensor, win: Window) -> torch.Tensor:
    """Changed output cells of a sliding-window layer (the module docstring's window rule on
    every axis, voxel-exact for any region shape).

    "Any changed cell in the window" is separable, so the three axes are reduced one after
    the other, on uint8 windows (``unfold``): on CPU this is about 10x faster than a float
    max-pool, which also computes the argmax of every window.

    Args:
        region: float (B, 1, T, H, W), 1 where the layer's input may differ from the clean one.

    Returns:
        float (B, 1, T', H', W'): 1 where an output window reads a changed input cell.
    """
    pads = pads_of(win)
    out = region.to(torch.uint8)
    if any(pads):
        out = F.pad(out, pads)
    for axis in range(3):
        k, s, d = win.kernel[axis], win.stride[axis], win.dilation[axis]
        if k > 1 or s > 1:
            windows = out.unfold(2 + axis, d * (k - 1) + 1, s)[..., ::d]
            out = windows.any(-1).to(torch.uint8)
    return out.to(region.dtype)


def tile_starts(size: int, tile: int) -> list[int]:
    """Starts of the tiles of one axis: 0, t, 2t, …; the last is moved back to end at ``size``
    (it overlaps its neighbour rather than being smaller, so every tile has one shape)."""
    return [min(i * tile, size - tile) for i in range(-(-size // tile))]


def changed_tiles(region: torch.Tensor, tile: Triple) -> torch.Tensor:
    """Tiles of an output region that contain a changed cell.

    Args:
        region: float (B, 1, T, H, W).
        tile: (tT, tH, tW), each <= the axis.

    Returns:
        int64 (n, 4): ``(sample, tile index t, y, x)`` of every changed tile.
    """
    occupied = F.max_pool3d(region, tile, tile, 0, 1, ceil_mode=True)  # (B, 1, gT, gH, gW)
    idx = torch.nonzero(occupied[:, 0] > 0)
    return idx


# --- The executor ---------------------------------------------------------------------------


class _LeafTracer(fx.Tracer):
    """Every module without children is a leaf (so SAME-padding layers stay whole)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return len(list(m.children())) == 0 or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """The network as a torch.fx graph; ``TypeError`` saying why when it cannot be traced."""
    try:
        return fx.GraphModule(model, _LeafTracer().trace(model))
    except Exception as err:  # fx raises many types for untraceable code
        first = str(err).splitlines()[0] if str(err) else ""
        raise TypeError(f"incremental inference needs a torch.fx-traceable network; "
                        f"{type(model).__name__} is not ({type(err).__name__}: {first})"
                        ) from err


@dataclass
class MacCount:
    """Convolution multiply-accumulates: computed by the executor vs full forwards.

    ``done`` counts the changed tiles (and full layers); the copies of a tile that pad a tile
    batch to its :func:`bucket` size (up to 19 % more) are not counted.
    """

    done: int = 0
    full: int = 0

    @property
    def saved(self) -> float:
        """Share of the full forwards' convolution MACs that were not computed."""
        return 1.0 - self.done / self.full if self.full else 0.0


@dataclass
class _Value:
    """A node's batch value and where it may differ from the clean one.

    ``region`` is float (B, 1, T, H, W) (1 = may differ), or None: anywhere (or not 5-D).
    """

    dense: object
    region: torch.Tensor | None


class IncrementalExecutor:
    """The network's output for clips that differ from one clean clip, recomputing each
    convolution and pooling layer only on the tiles its changed input reaches (module
    docstring).

    Args:
        model: the network in eval mode (its weights are read, never changed).
        clean: (1, C, T, H, W) the clean clip, as the network is fed.
        threshold: a layer whose changed tiles cover more than this share of its output runs
            in full (its output's region is still tracked, so later layers may go back to
            tiles).
        grid: tiles per axis (T, H, W) of every layer's output (fewer where an axis is
            shorter).
        graph: a traced graph of ``model`` (default: :func:`trace`).
        keep: projective-field thresholding (approximate mode; 1 = exact): after each
            convolution / pooling, only the changed cells carrying this share of the layer's
            change (:func:`threshold_region`) stay in the region later layers recompute.
    """

    def __init__(self, model: nn.Module, clean: torch.Tensor,
                 threshold: float = DEFAULT_THRESHOLD, grid: Triple = DEFAULT_GRID,
                 graph: fx.GraphModule | None = None, keep: float = 1.0) -> None:
        if clean.ndim != 5 or clean.shape[0] != 1:
            raise ValueError(f"clean must be (1, C, T, H, W), got {tuple(clean.shape)}")
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"incremental keep share must be in (0, 1], got {keep}")
        self.keep = keep
        self.dropped: list[tuple[str, float, float]] = []
        self.model = model
        self.gm = graph if graph is not None else trace(model)
        self.modules = dict(self.gm.named_modules())
        self.threshold, self.grid = threshold, grid
        self.macs = MacCount()
        self.clean_input = clean
        self._windows: dict[fx.Node, Window] = {}
        self._full_macs = 0
        self.clean = self._run_clean(clean)
        self._depends = self._input_dependent()
        self._frees = self._last_uses()
        self._chains = self._pointwise_chains()
        self._fused = {p for chain in self._chains.values() for p in chain}

    def _run_clean(self, x: torch.Tensor) -> dict[fx.Node, object]:
        """Every node's clean value (and each window layer's geometry)."""
        env: dict[fx.Node, object] = {}
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "output":
                continue
            else:
                env[node] = self._dense(node, env, clean=True)
                src = node.args[0] if node.args else None
                shape = getattr(env.get(src), "shape", None) if isinstance(src, fx.Node) else None
                if node.op == "call_module" and shape is not None and len(shape) == 5:
                    win = window_of(self.modules[node.target], shape)
                    if win is not None:
                        self._windows[node] = win
                        self._full_macs += win.macs_per_output * math.prod(env[node].shape[2:])
        return env

    def _last_uses(self) -> dict[fx.Node, list[fx.Node]]:
        """node → the values no later node reads. A batch frees each value after its last
        reader, as a plain forward frees its activations (why it matters: docs/DESIGN.md,
        "Incremental exact occlusion")."""
        seen: set[fx.Node] = set()
        frees: dict[fx.Node, list[fx.Node]] = {}
        for node in reversed(self.gm.graph.nodes):
            for src in node.all_input_nodes:
                if src not in seen:
                    seen.add(src)
                    frees.setdefault(node, []).append(src)
        return frees

    def _pointwise_chains(self) -> dict[fx.Node, list[fx.Node]]:
        """window node → the nodes that follow it alone and are pointwise in space (batch
        norm, ReLU, and 1 × 1 × 1 convolutions of stride 1, as I3D's max-pool → 1 × 1 × 1
        conv branch): they run on its changed tiles only, and the window's own output is never
        made whole."""
        chains: dict[fx.Node, list[fx.Node]] = {}
        for node in self._windows:
            chain, cur = [], node
            while len(cur.users) == 1:
                nxt = next(iter(cur.users))
                if not ((self._pointwise(nxt) or self._pointwise_conv(nxt))
                        and nxt.all_input_nodes == [cur]):
                    break
                chain.append(nxt)
                cur = nxt
            chains[node] = chain
        return chains

    def _pointwise_conv(self, node: fx.Node) -> bool:
        """A convolution that maps each cell to the same cell (1 × 1 × 1, stride 1, no
        padding): on a tile it computes exactly that tile."""
        win = self._windows.get(node)
        return (win is not None and win.macs_per_output > 0 and win.kernel == (1, 1, 1)
                and win.stride == (1, 1, 1) and win.pad_before == win.pad_after == (0, 0, 0))

    def _macs_per_output(self, node: fx.Node) -> int:
        """Window ``node``'s MACs per output cell, with its chain's 1 × 1 × 1 convolutions."""
        return self._windows[node].macs_per_output + sum(
            self._windows[p].macs_per_output for p in self._chains[node] if p in self._windows)

    def _input_dependent(self) -> set[fx.Node]:
        dep: set[fx.Node] = set()
        for node in self.gm.graph.nodes:
            if node.op == "placeholder" or any(a in dep for a in node.all_input_nodes):
                dep.add(node)
        return dep

    def _dense(self, node: fx.Node, env: dict, clean: bool = False) -> object:
        """One node run normally. In the clean pass (``clean``) in-place ReLUs run out of
        place, so the recorded activations stay intact; ``+=`` always runs out of place."""
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "call_module":
            m = self.modules[node.target]
            if clean and isinstance(m, nn.ReLU) and m.inplace:
                return F.relu(args[0])
            return m(*args, **kwargs)
        if node.op == "call_function":
            fn = operator.add if node.target is operator.iadd else node.target
            return fn(*args, **kwargs)
        if node.op == "call_method":
            name = {"relu_": "relu", "add_": "add"}.get(node.target, node.target)
            return getattr(args[0], name)(*args[1:], **kwargs)
        if node.op == "get_attr":
            return self.gm.get_parameter(node.target) if "." in node.target else getattr(
                self.gm, node.target)
        raise ValueError(f"unexpected fx node {node.op}")

    # Batches ------------------------------------------------------------------------------

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) clips → the network's output for them (a full forward's, to float
        tolerance)."""
        return self.run(batch)[0]

    def run(self, batch: torch.Tensor, keep_values: bool = False
            ) -> tuple[object, dict[str, _Value]]:
        """The output and, with ``keep_values`` (for tests), every node's :class:`_Value`
        (name → value); without it each value is freed after its last reader."""
        if tuple(batch.shape[1:]) != tuple(self.clean_input.shape[1:]):
            raise ValueError(f"batch {tuple(batch.shape)} does not match the clean clip "
                             f"{tuple(self.clean_input.shape)}")
        self.macs.full += batch.shape[0] * self._full_macs
        region = changed_cells(batch, self.clean_input)
        env: dict[fx.Node, _Value] = {}
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = _Value(batch, region)
            elif node.op == "output":
                out = fx.node.map_arg(node.args[0], lambda n: env[n].dense)
                return out, {n.name: v for n, v in env.items()}
            elif node not in self._depends:
                env[node] = _Value(self.clean[node], None)
            elif node not in self._fused:  # a fused node is computed with its window node
                chain = self._chains.get(node)
                env[chain[-1] if chain else node] = self._step(node, env)
            if not keep_values:
                for src in self._frees.get(node, ()):
                    env.pop(src, None)
        raise ValueError("the traced graph has no output")

    def _step(self, node: fx.Node, env: dict[fx.Node, _Value]) -> _Value:
        """One node on a batch, with its region rule."""
        win = self._windows.get(node)
        if win is not None:
            return self._window(node, win, env[node.args[0]])
        dense = self._dense(node, {n: env[n].dense for n in node.all_input_nodes})
        regions = [env[n].region for n in node.all_input_nodes if n in self._depends]
        if any(r is None for r in regions) or not regions:
            return _Value(dense, None)
        if self._pointwise(node) or (self._union(node) and all(
                r.shape == regions[0].shape for r in regions)):
            region = regions[0]
            for r in regions[1:]:
                region = torch.maximum(region, r)
            return _Value(dense, region)
        return _Value(dense, None)

    def _pointwise(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            m = self.modules[node.target]
            return ((isinstance(m, _POINTWISE_MODULES) or type(m).__name__ ==
                     "BatchNorm3dNoScale") and not m.training)
        if node.op == "call_function":
            return node.target in _POINTWISE_FUNCTIONS
        return node.op == "call_method" and node.target in _POINTWISE_METHODS

    def _union(self, node: fx.Node) -> bool:
        """``a + b`` or ``torch.cat(..., dim=1)``: changed where any input changed."""
        if node.op == "call_function" and node.target in _ADD:
            return True
        if node.op == "call_method" and node.target in ("add", "add_"):
            return True
        return (node.op == "call_function" and node.target in _CAT and _cat_dim(node) == 1)

    def _window(self, node: fx.Node, win: Window, src: _Value) -> _Value:
        """A conv / pool and its pointwise chain on the changed tiles only (or in full when
        they cover most of the output). The value is the chain's last node's."""
        x = src.dense
        chain = self._chains[node]
        clean_out = self.clean[chain[-1] if chain else node]
        b = x.shape[0]
        if src.region is None:
            self.macs.done += b * self._macs_per_output(node) * math.prod(clean_out.shape[2:])
            return _Value(self._chain(node, self._dense(node, {node.args[0]: x})), None)
        region = propagate_region(src.region, win)
        out_shape = tuple(clean_out.shape[2:])
        tile = tuple(min(n, max(-(-n // g), MIN_TILE)) for n, g in zip(out_shape, self.grid,
                                                                        strict=True))
        tiles = changed_tiles(region, tile)
        grid = tuple(-(-n // t) for n, t in zip(out_shape, tile, strict=True))
        if len(tiles) > self.threshold * b * math.prod(grid):
            self.macs.done += b * self._macs_per_output(node) * math.prod(out_shape)
            out = self._chain(node, self._dense(node, {node.args[0]: x}))
            if self.keep >= 1.0:
                return _Value(out, region)
            return _Value(out, self._cut(node, change_mass(out, clean_out) * region))
        out = repeat_clean(clean_out, b, _memory_format(x))
        if len(tiles) == 0:
            return _Value(out, region)
        starts = [torch.tensor(tile_starts(n, t), device=x.device)
                  for n, t in zip(out_shape, tile, strict=True)]
        span = tuple((t - 1) * s + d * (k - 1) + 1 for t, s, d, k in
                     zip(tile, win.stride, win.dilation, win.kernel, strict=True))
        n = len(tiles)
        padded = torch.cat([tiles, tiles[:1].expand(bucket(n) - n, -1)])  # see bucket()
        samples = padded[:, 0]
        corners = torch.stack([starts[a][padded[:, a + 1]] for a in range(3)], 1)  # (n', 3)
        stride = torch.tensor(win.stride, device=x.device)
        before = torch.tensor(win.pad_before, device=x.device)
        y = self._chain(node, win.run(gather_boxes(x, samples, corners * stride - before,
                                                   span, win.pad_value)))
        paste_boxes(out, samples[:n], corners[:n], y[:n])
        self.macs.done += len(tiles) * self._macs_per_output(node) * math.prod(tile)
        if self.keep >= 1.0:
            return _Value(out, region)
        # The change is measured on the computed tiles only: elsewhere out is the clean copy.
        clean_tiles = gather_boxes(clean_out, torch.zeros_like(samples[:n]), corners[:n], tile)
        change = torch.zeros_like(region)
        paste_boxes(change, samples[:n], corners[:n], change_mass(y[:n], clean_tiles))
        return _Value(out, self._cut(node, change * region))

    def _chain(self, node: fx.Node, y: torch.Tensor) -> torch.Tensor:
        """Window ``node``'s fused pointwise chain applied to its output or to tiles of it."""
        prev = node
        for p in self._chains[node]:
            y = self._dense(p, {prev: y})
            prev = p
        return y

    def _cut(self, node: fx.Node, change: torch.Tensor) -> torch.Tensor:
        """Projective-field thresholding of a layer's (B, 1, T, H, W) change: the kept region
        (the dropped change mass is recorded in ``dropped``: node, dropped, total)."""
        kept = threshold_region(change, self.keep)
        total = float(change.sum())
        self.dropped.append((node.name, total - float((change * kept).sum()), total))
        return kept


def changed_cells(batch: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Where a clip differs from the clean one in any channel.

    One comparison per channel, OR-ed: on CPU 1.7x faster for channels-last RGB clips than
    ``(batch != clean).any(1)``, whose reduction runs over a 3-long innermost axis.

    Args:
        batch: (B, C, T, H, W).
        clean: (1, C, T, H, W).

    Returns:
        float32 (B, 1, T, H, W): 1 where changed.
    """
    region = batch[:, :1] != clean[:, :1]
    for c in range(1, batch.shape[1]):
        region |= batch[:, c:c + 1] != clean[:, c:c + 1]
    return region.to(torch.float32)


def change_mass(out: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Each cell's change: Σ_c |out − clean| over channels.

    Args:
        out: (B, C, T, H, W) a layer's output for a batch.
        clean: (1, C, T, H, W) its clean output.

    Returns:
        float32 (B, 1, T, H, W).
    """
    return (out.float() - clean.float()).abs().sum(1, keepdim=True)


def threshold_region(change: torch.Tensor, keep: float) -> torch.Tensor:
    """Projective-field thresholding: per clip, the fewest cells carrying ``keep`` of the
    change mass (the largest changes first; ties at the cut are all kept).

    Krypton (Nakandala et al., SIGMOD 2019) truncates a patch's projective field where
    it grows past a threshold, because the change concentrates at its centre. Here the cut is
    by the measured change instead of by geometry, so it also fits integrated masks (several
    boxes per clip): a cell left out is not recomputed by later layers, which read the clean
    activation there; the cells dropped at each layer carry at most ``1 − keep`` of its change.

    Args:
        change: float (B, 1, T, H, W) ≥ 0, zero outside the region (:func:`change_mass`).
        keep: share in (0, 1].

    Returns:
        float (B, 1, T, H, W): 1 on the kept cells (a subset of ``change > 0``).
    """
    flat = change.reshape(change.shape[0], -1)
    ordered = flat.sort(dim=1, descending=True).values.double()
    mass = ordered.cumsum(1)
    need = keep * mass[:, -1:]  # (B, 1)
    last = (mass < need).sum(1, keepdim=True).clamp(max=flat.shape[1] - 1)  # first index ≥ need
    cutoff = ordered.gather(1, last).to(flat.dtype)
    kept = (flat >= cutoff) & (flat > 0)
    return kept.reshape(change.shape).to(change.dtype)


def bucket(n: int) -> int:
    """``n`` rounded up to 2^(k/4) (at most 19 % more): the layer sees few distinct batch
    sizes, so the convolution library reuses its kernels instead of preparing new ones."""
    if n <= 8:
        return n
    k = math.ceil(4 * math.log2(n) - 1e-9)
    return max(n, round(2 ** (k / 4)))


def repeat_clean(clean: torch.Tensor, b: int, fmt: torch.memory_format) -> torch.Tensor:
    """``b`` copies of a clean activation, in memory format ``fmt``.

    When ``clean`` is already laid out in ``fmt`` the copy is one flat (b, numel) broadcast:
    on CPU 3x faster for I3D's first activation (64 × 8 × 112 × 112) than a 5-D broadcast
    copy, whose channels-last inner loop is short.

    Args:
        clean: (1, C, T, H, W).
        b: copies.
        fmt: ``torch.contiguous_format`` or ``torch.channels_last_3d``.

    Returns:
        (b, C, T, H, W) in ``fmt``.
    """
    out = torch.empty_like(clean.expand(b, *clean.shape[1:]), memory_format=fmt)
    order = (0, 2, 3, 4, 1) if fmt == torch.channels_last_3d else (0, 1, 2, 3, 4)
    if clean.is_contiguous(memory_format=fmt):
        flat = out.permute(order).view(b, -1)  # a view: out is laid out in that order
        flat.copy_(clean.permute(order).reshape(1, -1).expand_as(flat))
    else:
        out.copy_(clean.expand_as(out))
    return out


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last_3d if x.ndim == 5 and x.is_contiguous(
        memory_format=torch.channels_last_3d) and not x.is_contiguous()
        else torch.contiguous_format)


def _box_index(samples: torch.Tensor, corners: torch.Tensor, size: Sequence[int]
               ) -> tuple[torch.Tensor, ...]:
    """Advanced indices of n boxes of one ``size`` in a (B, T, H, W, ...) view:
    (n, 1, 1, 1), (n, t, 1, 1), (n, 1, h, 1), (n, 1, 1, w)."""
    ranges = [corners[:, a, None] + torch.arange(size[a], device=corners.device)
              for a in range(3)]
    return (samples[:, None, None, None], ranges[0][:, :, None, None],
            ranges[1][:, None, :, None], ranges[2][:, None, None, :])


def gather_boxes(x: torch.Tensor, samples: torch.Tensor, corners: torch.Tensor,
                 span: Triple, pad_value: float = 0.0) -> torch.Tensor:
    """Stack boxes of ``x`` in one indexing call (no Python loop over boxes), reading
    ``pad_value`` outside ``x`` (the layer's padding; ``x`` itself is never padded).

    Args:
        x: (B, C, T, H, W).
        samples: int64 (n,) the sample of each box.
        corners: int64 (n, 3) (t, y, x) start of each box (may be negative or reach past
            the end).
        span: (t, h, w) of every box.

    Returns:
        (n, C, *span) in ``torch.channels_last_3d`` layout (channels innermost, the gather's
        natural order).
    """
    if _by_slices(x, span):
        return _gather_by_slices(x, samples, corners, span, pad_value)
    size = torch.tensor(x.shape[2:], device=x.device)
    inside = (corners >= 0).all() and (corners + torch.tensor(span, device=x.device)
                                       <= size).all()
    if bool(inside):
        index = _box_index(samples, corners, span)
        return x.permute(0, 2, 3, 4, 1)[index].permute(0, 4, 1, 2, 3)
    index = list(_box_index(samples, corners, span))
    inside_axis = []
    for a in range(3):  # clamp each axis into x; remember which cells were outside
        pos = index[a + 1]
        inside_axis.append(((pos >= 0) & (pos < size[a])).reshape(len(samples), span[a]))
        index[a + 1] = pos.clamp(0, int(size[a]) - 1)
    out = x.permute(0, 2, 3, 4, 1)[tuple(index)]  # (n, t, h, w, C)
    # Outside cells lie in slabs at the start and end of each axis (at most the layer's
    # padding deep): fill those slabs only, not the whole gathered tensor.
    for a in range(3):
        low = max(0, -int(corners[:, a].min()))
        high = max(0, int(corners[:, a].max()) + span[a] - int(size[a]))
        for start, depth in ((0, min(low, span[a])), (max(span[a] - high, 0), min(high, span[a]))):
            if depth:
                shape = [len(samples), 1, 1, 1, 1]
                shape[a + 1] = depth
                outside = ~inside_axis[a][:, start:start + depth].reshape(shape)
                out.narrow(a + 1, start, depth).masked_fill_(outside, pad_value)
    return out.permute(0, 4, 1, 2, 3)


# On CPU, boxes of at least this many bytes are copied one slice at a time: 2-4x faster than
# one advanced-indexing call, whose per-element index arithmetic costs more than the Python
# loop once a box holds a few thousand channel vectors (docs/BENCHMARKS.md, "incremental").
SLICE_BOX_BYTES = 1 << 16


def _by_slices(x: torch.Tensor, span: Sequence[int]) -> bool:
    return (x.device.type == "cpu"
            and x.shape[1] * math.prod(span) * x.element_size() >= SLICE_BOX_BYTES)


def _gather_by_slices(x: torch.Tensor, samples: torch.Tensor, corners: torch.Tensor,
                      span: Triple, pad_value: float) -> torch.Tensor:
    """:func:`gather_boxes` by one slice copy per box (a box that reaches outside ``x`` is
    filled with ``pad_value`` first)."""
    xl = x.permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
    out = torch.empty((len(samples), *span, x.shape[1]), dtype=x.dtype, device=x.device)
    size = tuple(x.shape[2:])
    for i, (s, corner) in enumerate(zip(samples.tolist(), corners.tolist(), strict=True)):
        lo = [max(c, 0) for c in corner]
        hi = [min(c + w, n) for c, w, n in zip(corner, span, size, strict=True)]
        if lo != corner or any(h != c + w for h, c, w in zip(hi, corner, span, strict=True)):
            out[i].fill_(pad_value)
        if all(h > low for low, h in zip(lo, hi, strict=True)):
            out[i, lo[0] - corner[0]:hi[0] - corner[0], lo[1] - corner[1]:hi[1] - corner[1],
                lo[2] - corner[2]:hi[2] - corner[2]] = xl[s, lo[0]:hi[0], lo[1]:hi[1],
                                                         lo[2]:hi[2]]
    return out.permute(0, 4, 1, 2, 3)


def paste_boxes(out: torch.Tensor, samples: torch.Tensor, corners: torch.Tensor,
                patches: torch.Tensor) -> None:
    """``out[sample, :, box] = patch`` for every box, in one indexing call (boxes that overlap
    must agree there, as tiles of one layer computed from the same input do).

    Args:
        out: (B, C, T, H, W), written in place.
        samples: int64 (n,).
        corners: int64 (n, 3) (t, y, x) start of each box.
        patches: (n, C, t, h, w).
    """
    if _by_slices(patches, patches.shape[2:]):
        outl, patchl = out.permute(0, 2, 3, 4, 1), patches.permute(0, 2, 3, 4, 1)
        t, h, w = patches.shape[2:]
        for i, (s, (a, b, c)) in enumerate(zip(samples.tolist(), corners.tolist(),
                                               strict=True)):
            outl[s, a:a + t, b:b + h, c:c + w] = patchl[i]
        return
    out.permute(0, 2, 3, 4, 1)[_box_index(samples, corners, patches.shape[2:])] = (
        patches.permute(0, 2, 3, 4, 1).to(out.dtype))


def _cat_dim(node: fx.Node) -> int:
    if "dim" in node.kwargs:
        return node.kwargs["dim"]
    return node.args[1] if len(node.args) > 1 else 0

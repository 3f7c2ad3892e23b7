"""Tube masks on the scoring device: rasterised a chunk at a time, or never dense at all.

Only ``B`` masks exist densely at once (``B`` = the scoring batch size), so peak memory does not
grow with the number of masks N. Sums over masks and weighted sums of masks (AOSA-approx's
estimates and maps) need no dense mask: :func:`union_box_sums` and :func:`paint_union_boxes`
work on the boxes (inclusion–exclusion over each mask's boxes per frame, summed-area tables).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def occlusion_masks(boxes: torch.Tensor, members: torch.Tensor, frame_size: tuple[int, int]
                    ) -> torch.Tensor:
    """Union of the boxes of each integrated mask.

    Args:
        boxes: int (N, T, 4) per-tube boxes ``[x0, y0, x1, y1)`` (empty where not occluding).
        members: int64 (B, M) tube indices united into each of the B masks (the mask itself and
            its K partners: the element-wise product of keep-masks of Eq. 2's integration).
        frame_size: (H, W).

    Returns:
        bool (B, T, H, W), True where the input is occluded.
    """
    height, width = frame_size
    b = boxes[members]  # (B, M, T, 4)
    n, m, t = b.shape[:3]
    ys = torch.arange(height, device=boxes.device)
    xs = torch.arange(width, device=boxes.device)
    in_y = (ys >= b[..., 1, None]) & (ys < b[..., 3, None])  # (B, M, T, H)
    in_x = (xs >= b[..., 0, None]) & (xs < b[..., 2, None])  # (B, M, T, W)
    # Covered where some member's row and column both are: Σ_m in_y[m, y] · in_x[m, x] > 0,
    # one batched (H × M) @ (M × W) product per mask and frame (exact: small integer counts).
    rows = in_y.permute(0, 2, 3, 1).reshape(n * t, height, m).float()
    cols = in_x.permute(0, 2, 1, 3).reshape(n * t, m, width).float()
    return (torch.bmm(rows, cols) > 0).reshape(n, t, height, width)


def mask_members(indices: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """Tube indices of integrated masks ``indices``: each one with its K partners.

    Args:
        indices: int64 (B,) mask indices.
        partners: int64 (N, K).

    Returns:
        int64 (B, K + 1).
    """
    return torch.cat([indices[:, None], partners[indices]], dim=1)


def tube_mask_batches(boxes: torch.Tensor, partners: torch.Tensor, frame_size: tuple[int, int],
                      batch_size: int, indices: torch.Tensor | None = None
                      ) -> Iterator[torch.Tensor]:
    """Integrated tube masks rasterised ``batch_size`` at a time on ``boxes``' device.

    Args:
        boxes: int (N, T, 4) tube boxes.
        partners: int64 (N, K) (K = 0: single masks).
        frame_size: (H, W).
        batch_size: masks per yielded batch (the last may be smaller).
        indices: int64 (M,) the masks to rasterise, in that order (None: all N, 0 … N − 1).

    Yields:
        bool (B, T, H, W), True where occluded; mask i is tube i united with its partners.
    """
    if indices is None:
        indices = torch.arange(boxes.shape[0], device=boxes.device)
    indices = indices.to(boxes.device)
    for start in range(0, indices.numel(), batch_size):
        chunk = indices[start:start + batch_size]
        yield occlusion_masks(boxes, mask_members(chunk, partners), frame_size)


# --- Box sums without dense masks -------------------------------------------------------------
#
# A tube mask is one axis-aligned box per frame, and an integrated mask is, per frame, the union
# of its M = K + 1 members' boxes. By inclusion–exclusion the indicator of a union of M boxes is
# Σ over the non-empty subsets S of the members of (−1)^(|S|+1) · 1[∩S], and the intersection of
# boxes is a box. So a masked sum Σ v ⊙ m_i is 2^M − 1 signed box sums, each read in O(1) from a
# summed-area table of v, and Σ_i w_i m_i is 2^M − 1 signed boxes per mask and frame painted into
# a difference array and integrated by two cumulative sums: O(N · T · 2^M + T · H · W) instead of
# O(N · T · H · W). Exact (float64; the results equal the dense masks' to rounding).

MAX_BOX_MEMBERS = 8
"""Largest M handled by inclusion–exclusion (2^8 − 1 = 255 boxes per mask and frame)."""


def boxable(partners: torch.Tensor) -> bool:
    """Whether masks of these int64 (N, K) partners are handled by their boxes
    (K + 1 <= :data:`MAX_BOX_MEMBERS`) rather than rasterised."""
    return partners.shape[1] + 1 <= MAX_BOX_MEMBERS


def member_subsets(m: int, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-empty subsets of M members and their inclusion–exclusion signs.

    Returns:
        (bool (S, M) membership, float64 (S,) signs ±1), S = 2^M − 1.
    """
    codes = torch.arange(1, 2 ** m, device=device)
    member = (codes[:, None] >> torch.arange(m, device=device)) & 1  # (S, M)
    sign = 1.0 - 2.0 * ((member.sum(1) + 1) % 2)  # + for odd subsets, − for even
    return member.bool(), sign.double()


def signed_intersections(boxes: torch.Tensor, members: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every subset's intersection box, per mask and frame, with its sign.

    Args:
        boxes: int (N, T, 4) ``[x0, y0, x1, y1)``; an empty box (x0 == x1) occludes nothing.
        members: int64 (B, M) tube indices united into each mask.

    Returns:
        (int64 (B, S, T, 4) intersection boxes, empty ones collapsed to ``[0, 0, 0, 0)``;
        float64 (S,) signs).
    """
    member, sign = member_subsets(members.shape[1], boxes.device)
    b = boxes[members].long()[:, None]  # (B, 1, M, T, 4)
    inside = member[None, :, :, None]  # (1, S, M, 1)
    big = torch.iinfo(torch.int64).max
    lo = torch.where(inside[..., None], b[..., :2], -big).amax(dim=2)  # (B, S, T, 2)
    # min(...).values, not amin: PyTorch's CPU amin of int64 is 60x slower than amax here
    hi = torch.where(inside[..., None], b[..., 2:], big).min(dim=2).values  # (B, S, T, 2)
    box = torch.cat([lo, hi], dim=-1)
    empty = (hi <= lo).any(dim=-1, keepdim=True)
    return torch.where(empty, torch.zeros_like(box), box), sign


def summed_area_table(values: torch.Tensor) -> torch.Tensor:
    """Per-frame integral image with a zero first row and column.

    Args:
        values: (T, H, W).

    Returns:
        float64 (T, H + 1, W + 1): ``sat[t, y, x] = Σ values[t, :y, :x]``.
    """
    sat = values.double().cumsum(1).cumsum(2)
    return torch.nn.functional.pad(sat, (1, 0, 1, 0))


def union_box_sums(sat: torch.Tensor, boxes: torch.Tensor, members: torch.Tensor
                   ) -> torch.Tensor:
    """Σ values ⊙ m_i for each integrated mask, from the summed-area table of ``values``.

    Equals ``einsum("thw,bthw->b", values, occlusion_masks(boxes, members, (H, W)))``.

    Args:
        sat: float64 (T, H + 1, W + 1) from :func:`summed_area_table`.
        boxes: int (N, T, 4).
        members: int64 (B, M), M <= :data:`MAX_BOX_MEMBERS`.

    Returns:
        float64 (B,).
    """
    if members.shape[1] == 0:
        return sat.new_zeros(members.shape[0])
    box, sign = signed_intersections(boxes, members)  # (B, S, T, 4)
    t, hp, wp = sat.shape
    frame = torch.arange(t, device=sat.device)[:, None] * (hp * wp)  # (T, 1)
    flat = sat.reshape(-1)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat[frame[..., 0] + y * wp + x]

    x0, y0, x1, y1 = box.unbind(-1)
    sums = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)  # (B, S, T)
    return torch.einsum("bst,s->b", sums, sign)


def union_box_areas(boxes: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Occluded voxels of each integrated mask: int64 (B,) (``occlusion_masks(...).sum``)."""
    if members.shape[1] == 0:
        return torch.zeros(members.shape[0], dtype=torch.int64, device=boxes.device)
    box, sign = signed_intersections(boxes, members)
    area = ((box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])).sum(-1)  # (B, S)
    return (area.double() @ sign).round().long()


def paint_union_boxes(weights: torch.Tensor, boxes: torch.Tensor, members: torch.Tensor,
                      frame_shape: tuple[int, int, int]) -> torch.Tensor:
    """Σ_i weights_i · m_i, the masks never dense.

    Equals ``einsum("b,bthw->thw", weights, occlusion_masks(boxes, members, (H, W)))``.

    Args:
        weights: (B,).
        boxes: int (N, T, 4).
        members: int64 (B, M), M <= :data:`MAX_BOX_MEMBERS`.
        frame_shape: (T, H, W).

    Returns:
        float64 (T, H, W).
    """
    t, h, w = frame_shape
    diff = torch.zeros((t, h + 1, w + 1), dtype=torch.float64, device=boxes.device)
    if members.shape[1] == 0 or members.shape[0] == 0:
        return diff[:, :h, :w].clone()
    box, sign = signed_intersections(boxes, members)  # (B, S, T, 4)
    x0, y0, x1, y1 = box.unbind(-1)
    val = (weights.double()[:, None] * sign[None])[..., None].expand_as(x0)  # (B, S, T)
    frame = torch.arange(t, device=boxes.device) * ((h + 1) * (w + 1))
    flat = diff.view(-1)
    for y, x, s in ((y0, x0, 1.0), (y0, x1, -1.0), (y1, x0, -1.0), (y1, x1, 1.0)):
        flat.index_add_(0, (frame + y * (w + 1) + x).reshape(-1), (s * val).reshape(-1))
    return diff.cumsum(1).cumsum(2)[:, :h, :w]

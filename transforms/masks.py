"""Rasterise compact tube masks on the scoring device, a chunk at a time.

Only ``B`` masks exist densely at once (``B`` = the scoring batch size), so peak memory does not
grow with the number of masks N.
"""

from __future__ import annotations

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
    ys = torch.arange(height, device=boxes.device)
    xs = torch.arange(width, device=boxes.device)
    in_y = (ys >= b[..., 1, None]) & (ys < b[..., 3, None])  # (B, M, T, H)
    in_x = (xs >= b[..., 0, None]) & (xs < b[..., 2, None])  # (B, M, T, W)
    occluded = torch.zeros((b.shape[0], b.shape[2], height, width), dtype=torch.bool,
                           device=boxes.device)
    for m in range(b.shape[1]):  # M = K + 1 is small; avoids a (B, M, T, H, W) temporary
        occluded |= in_y[:, m, :, :, None] & in_x[:, m, :, None, :]
    return occluded


def mask_members(indices: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """Tube indices of integrated masks ``indices``: each one with its K partners.

    Args:
        indices: int64 (B,) mask indices.
        partners: int64 (N, K).

    Returns:
        int64 (B, K + 1).
    """
    return torch.cat([indices[:, None], partners[indices]], dim=1)

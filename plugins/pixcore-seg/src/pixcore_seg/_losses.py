"""Segmentation losses over kept pixels: cross-entropy, Dice, their sum, focal, Lovasz-softmax, OHEM.

Every loss takes logits ``[B, C, H, W]``, class ids ``[B, H, W]`` (or ``[B, 1, H, W]``)
and a boolean validity mask ``[B, H, W]``. It scores only the *kept* pixels,
``K = valid & (target != ignore_index)``, pooled over the whole batch, and returns an exact
zero that still has a gradient path when no pixel is kept. A kept class id outside
``[0, C)`` is an error that names the value.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import pixcore
import torch
import torch.nn.functional as F
from pixcore.targets import DEFAULT_IGNORE_INDEX
from pydantic import Field
from torch import Tensor

from pixcore_seg._common import prepare_logits

__all__ = [
    "CrossEntropyDiceLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
]

#: The number of classes, a context fact of the segmentation task.
NumClasses = Annotated[int, Field(gt=0)]
#: Which classes a Dice or Lovasz loss averages over.
Classes = Literal["present", "all"]
#: A fraction in ``(0, 1]``.
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


def _zero(logits: Tensor) -> Tensor:
    """An exact 0 that keeps the gradient path to ``logits`` (gradient exactly 0)."""
    return logits.sum() * 0.0


def _check_per_class(values: list[float] | None, num_classes: int | None, name: str) -> None:
    if values is None:
        return
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(
            f"{name} must be finite and non-negative with a positive sum, got {values}"
        )
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(
            f"{name} has {len(values)} entries for {num_classes} classes; give one "
            "value per class, in class-id order"
        )


def _per_class_tensor(
    values: Tensor | None, num_classes: int, name: str, what: str
) -> Tensor | None:
    if values is not None and values.numel() != num_classes:
        raise ValueError(
            f"{what}: {name} has {values.numel()} entries but the logits have "
            f"{num_classes} classes; give one value per class"
        )
    return values


# --------------------------------------------------------------------------------------
# Cross-entropy
# --------------------------------------------------------------------------------------


class CrossEntropyLoss(pixcore.Loss):
    r"""Softmax cross-entropy averaged over kept pixels.

    With logits :math:`z_i`, target :math:`y_i`, class weights :math:`w` (all ones by
    default) and label smoothing :math:`\varepsilon` over :math:`C` classes, kept pixel
    :math:`i` costs

    .. math::
        \ell_i = w_{y_i}\bigl[-(1-\varepsilon)\log p_{i,y_i}\bigr]
               - \frac{\varepsilon}{C}\sum_c w_c \log p_{i,c},
        \qquad p_i = \operatorname{softmax}(z_i),

    and the loss is :math:`\sum_{i \in K} \ell_i / \sum_{i \in K} w_{y_i}`: exactly
    ``torch.nn.functional.cross_entropy(..., weight=w, label_smoothing=ε)`` with
    ``reduction="mean"`` on the kept pixels (label smoothing: Szegedy et al., "Rethinking
    the Inception Architecture", CVPR 2016). With no kept pixel (or only zero-weight ones)
    the loss is 0 and keeps its gradient path.

    Args:
        num_classes: Number of classes (given by the task); checks the length of
            ``class_weights``.
        ignore_index: Target value of unlabelled pixels (given by the task).
        class_weights: One non-negative weight per class, in class-id order (torch's
            ``weight``), e.g. inverse class frequencies. None: all ones.
        label_smoothing: :math:`\varepsilon` in ``[0, 1)``: the target puts
            :math:`1 - \varepsilon` on the true class and :math:`\varepsilon / C` on every
            class (Szegedy et al. 2016).

    """

    def __init__(
        self,
        num_classes: NumClasses | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        class_weights: list[float] | None = None,
        label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
    ) -> None:
        super().__init__()
        self.check_params(num_classes, class_weights)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        weight = None if class_weights is None else torch.tensor(class_weights)
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", weight, persistent=False)

    @staticmethod
    def check_params(num_classes: int | None, class_weights: list[float] | None) -> None:
        """``class_weights``: finite, non-negative, a positive sum, one per class."""
        _check_per_class(class_weights, num_classes, "class_weights")

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        what = "cross_entropy"
        logits, target, keep = prepare_logits(prediction, target, valid, self.ignore_index, what)
        weight = _per_class_tensor(self.class_weights, logits.shape[1], "class_weights", what)
        if weight is not None:
            weight = weight.to(logits)
        # Every pixel that is not kept becomes torch's ignored class: zero loss and gradient.
        masked = target.masked_fill(~keep, -100)
        per_pixel = F.cross_entropy(
            logits, masked, weight=weight, ignore_index=-100,
            label_smoothing=self.label_smoothing, reduction="none",
        )
        if weight is None:
            denominator = keep.sum().to(per_pixel.dtype)
        else:
            denominator = (weight[target] * keep).sum()
        summed = per_pixel.sum()
        total = torch.where(denominator > 0, summed / denominator.clamp(min=1e-12), summed * 0.0)
        return pixcore.LossOutput(total, {"cross_entropy": total.detach()})


# --------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------


class DiceLoss(pixcore.Loss):
    r"""Soft Dice loss over softmax probabilities (Milletari, Navab and Ahmadi, "V-Net", 3DV 2016).

    With :math:`p_{i,c} = \operatorname{softmax}(z_i)_c` and the one-hot target
    :math:`y_{i,c} = [y_i = c]`, pooled over the kept pixels :math:`K` of the whole batch:

    .. math::
        D_c = \frac{2 \sum_{i \in K} p_{i,c}\, y_{i,c} + s}
                   {\sum_{i \in K} p_{i,c}^{\,e} + \sum_{i \in K} y_{i,c}^{\,e} + s},
        \qquad
        \mathcal{L} = 1 - \frac{1}{|S|} \sum_{c \in S} D_c,

    with smoothing :math:`s`, exponent :math:`e \in \{1, 2\}` (V-Net's eq. 1 uses 2) and
    :math:`S` the classes present in the kept target (``classes="present"``) or all
    :math:`C` classes (``classes="all"``). With no kept pixel the loss is 0.

    Args:
        ignore_index: Target value of unlabelled pixels (given by the task).
        smooth: :math:`s \ge 0`, added to numerator and denominator: keeps the ratio
            defined for a class with no pixel and smooths its gradient.
        exponent: :math:`e`, the power of :math:`p` and :math:`y` in the denominator: 2 as
            in Milletari et al. 2016 (V-Net) and mmsegmentation, 1 for the plain soft Dice
            (Sorensen) ratio.
        classes: ``"present"``: average over the classes that occur in the kept target
            pixels; ``"all"``: over all C classes, so that absent classes are pushed
            towards zero probability.

    """

    def __init__(
        self,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        smooth: Annotated[float, Field(ge=0.0)] = 1.0,
        exponent: Literal[1, 2] = 2,
        classes: Classes = "present",
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth
        self.exponent = exponent
        self.classes = classes

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        logits, target, keep = prepare_logits(
            prediction, target, valid, self.ignore_index, "dice"
        )
        num_classes = logits.shape[1]
        if not bool(keep.any()):
            total = _zero(logits)
            return pixcore.LossOutput(total, {"dice": total.detach()})
        probs = torch.softmax(logits, dim=1)
        weight = keep.to(probs.dtype)
        # sum_i p_ic^e over kept pixels, per class: [C]
        predicted = ((probs if self.exponent == 1 else probs.square()) * weight[:, None]).sum(
            dim=(0, 2, 3)
        )
        # sum_i p_ic y_ic = sum over kept pixels of p_{i, y_i}, added into class y_i: [C]
        p_true = probs.gather(1, target[:, None])[:, 0] * weight
        intersection = torch.zeros(num_classes, dtype=probs.dtype, device=probs.device)
        intersection = intersection.scatter_add(0, target.reshape(-1), p_true.reshape(-1))
        # sum_i y_ic^e = sum_i y_ic: the kept pixel count of each class (y is 0 or 1).
        counts = torch.bincount(target[keep], minlength=num_classes).to(probs.dtype)
        denominator = (predicted + counts + self.smooth).clamp(min=1e-12)
        dice = (2.0 * intersection + self.smooth) / denominator
        if self.classes == "present":
            dice = dice[counts > 0]
        total = 1.0 - dice.mean()
        return pixcore.LossOutput(total, {"dice": total.detach()})


class CrossEntropyDiceLoss(pixcore.Loss):
    r"""Cross-entropy plus a weighted soft Dice: :math:`\mathcal{L}_{CE} + \lambda\,\mathcal{L}_{Dice}`.

    Cross-entropy averages over pixels, so the large classes set most of its gradient and a
    small class the model never predicts costs little; Dice scores each present class's
    overlap whatever its size, so that class weighs as much as the largest. Their sum is
    the usual combination (nnU-Net's ``DC_and_CE_loss``, Isensee et al., Nature Methods
    2021): Dice alone gives poorly calibrated probabilities, cross-entropy alone learns small
    classes late. Both terms are exactly :class:`CrossEntropyLoss` and :class:`DiceLoss`
    with the same parameters; the parts ``cross_entropy`` and ``dice`` log them unweighted.

    Args:
        num_classes: Number of classes (given by the task); checks ``class_weights``.
        ignore_index: Target value of unlabelled pixels (given by the task).
        class_weights: Cross-entropy's weight per class (see :class:`CrossEntropyLoss`).
        label_smoothing: Cross-entropy's :math:`\varepsilon` (see :class:`CrossEntropyLoss`).
        dice_weight: :math:`\lambda \ge 0`, the weight of the Dice term (0: cross-entropy).
        smooth: Dice's :math:`s` (see :class:`DiceLoss`).
        exponent: Dice's :math:`e` (see :class:`DiceLoss`).
        classes: The classes Dice averages over (see :class:`DiceLoss`).

    """

    def __init__(
        self,
        num_classes: NumClasses | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        class_weights: list[float] | None = None,
        label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
        dice_weight: Annotated[float, Field(ge=0.0)] = 1.0,
        smooth: Annotated[float, Field(ge=0.0)] = 1.0,
        exponent: Literal[1, 2] = 2,
        classes: Classes = "present",
    ) -> None:
        super().__init__()
        self.cross_entropy = CrossEntropyLoss(num_classes, ignore_index, class_weights, label_smoothing)
        self.dice = DiceLoss(ignore_index, smooth, exponent, classes)
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight

    @staticmethod
    def check_params(num_classes: int | None, class_weights: list[float] | None) -> None:
        """``class_weights``: finite, non-negative, a positive sum, one per class."""
        CrossEntropyLoss.check_params(num_classes, class_weights)

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        # Checked here first, so that an error names this loss rather than one of its terms.
        prepare_logits(prediction, target, valid, self.ignore_index, "cross_entropy_dice")
        ce = self.cross_entropy(prediction, target, valid).total
        dice = self.dice(prediction, target, valid).total
        total = ce + self.dice_weight * dice
        return pixcore.LossOutput(total, {"cross_entropy": ce.detach(), "dice": dice.detach()})


# --------------------------------------------------------------------------------------
# Focal
# --------------------------------------------------------------------------------------


class FocalLoss(pixcore.Loss):
    r"""Softmax focal loss (Lin et al. 2017).

    Source: Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object Detection",
    ICCV 2017. With :math:`p_t = \operatorname{softmax}(z_i)_{y_i}`, the probability of
    the true class, the loss is the mean over the kept pixels :math:`K` of the whole batch of

    .. math::
        \mathrm{FL}_i = -\alpha_{y_i}\,(1 - p_t)^{\gamma}\,\log p_t ,

    the multi-class (softmax) form of eq. 5 of the paper. :math:`\alpha` is optional (all
    ones by default); the sum is divided by :math:`|K|`, not by :math:`\sum \alpha_{y_i}`.
    With :math:`\gamma = 0` and no :math:`\alpha` it is ``cross_entropy``. The factor
    :math:`1 - p_t` is computed as ``-expm1(log p_t)`` (accurate when :math:`p_t \to 1`)
    and kept above :math:`10^{-12}`, so that the gradient stays finite for
    :math:`0 < \gamma < 1`.

    Args:
        num_classes: Number of classes (given by the task); checks the length of ``alpha``.
        ignore_index: Target value of unlabelled pixels (given by the task).
        gamma: Focusing parameter :math:`\gamma \ge 0`: 0 gives cross-entropy; Lin et al.
            2017 use 2.
        alpha: Optional weight :math:`\alpha_c` per class, in class-id order
            (non-negative). None: all ones.

    """

    def __init__(
        self,
        num_classes: NumClasses | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        gamma: Annotated[float, Field(ge=0.0)] = 2.0,
        alpha: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.check_params(num_classes, alpha)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.gamma = gamma
        weight = None if alpha is None else torch.tensor(alpha)
        self.alpha: Tensor | None
        self.register_buffer("alpha", weight, persistent=False)

    @staticmethod
    def check_params(num_classes: int | None, alpha: list[float] | None) -> None:
        """``alpha``: finite, non-negative, a positive sum, one per class."""
        _check_per_class(alpha, num_classes, "alpha")

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        what = "focal"
        logits, target, keep = prepare_logits(prediction, target, valid, self.ignore_index, what)
        alpha = _per_class_tensor(self.alpha, logits.shape[1], "alpha", what)
        count = keep.sum()
        if int(count) == 0:
            total = _zero(logits)
            return pixcore.LossOutput(total, {"focal": total.detach()})
        log_pt = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        per_pixel = -log_pt
        if self.gamma != 0.0:
            one_minus = (-torch.expm1(log_pt)).clamp(min=1e-12)
            per_pixel = one_minus.pow(self.gamma) * per_pixel
        if alpha is not None:
            per_pixel = alpha.to(per_pixel)[target] * per_pixel
        # where(), not a product: a non-kept pixel adds exactly 0 and gets a 0 gradient.
        total = torch.where(keep, per_pixel, torch.zeros_like(per_pixel)).sum() / count
        return pixcore.LossOutput(total, {"focal": total.detach()})


# --------------------------------------------------------------------------------------
# Lovasz-softmax
# --------------------------------------------------------------------------------------


def _lovasz_gradient(fg_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at sorted errors (Berman alg. 1).

    ``fg_sorted``: ``[N]`` 0/1 ground truth of one class, ordered by decreasing error.
    Entry ``k`` is ``J(k+1) - J(k)``, with ``J(k)`` the Jaccard loss of mispredicting the
    first ``k`` pixels: ``1 - |G \\ first k| / |G ∪ first k|``.
    """
    total = fg_sorted.sum()
    intersection = total - fg_sorted.cumsum(0)
    union = total + (1.0 - fg_sorted).cumsum(0)  # >= 1 everywhere
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _lovasz_softmax_flat(probs: Tensor, target: Tensor, classes: str) -> Tensor | None:
    """Mean Lovasz hinge over classes of ``probs [N, C]`` and ``target [N]``; None if no class."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (target == c).to(probs.dtype)
        if classes == "present" and not bool(fg.any()):
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_gradient(fg[order])))
    if not losses:
        return None
    return torch.stack(losses).mean()


class LovaszSoftmaxLoss(pixcore.Loss):
    r"""Lovasz-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018).

    A convex surrogate of the Jaccard loss :math:`1 - \mathrm{IoU}_c`. For class
    :math:`c`, with the errors :math:`m_i = |y_{i,c} - p_{i,c}|` of the kept pixels
    (:math:`p = \operatorname{softmax}(z)`, :math:`y` one-hot) sorted so that
    :math:`m_{\pi_1} \ge m_{\pi_2} \ge \dots`, and the Jaccard loss of a set :math:`M` of
    mispredicted pixels :math:`\Delta_c(M) = |M| / |G_c \cup M|` (:math:`G_c`: the pixels
    of class :math:`c`), the Lovasz extension is

    .. math::
        \overline{\Delta}_c(m) = \sum_{k} m_{\pi_k}
            \bigl[\Delta_c(\{\pi_1..\pi_k\}) - \Delta_c(\{\pi_1..\pi_{k-1}\})\bigr]

    (eq. 8-9 and algorithm 1 of the paper; the reference implementation is
    ``lovasz_losses.py`` of github.com/bermanmaxim/LovaszSoftmax). The loss is the mean
    of :math:`\overline{\Delta}_c` over the classes present in the kept target
    (``classes="present"``, the reference's default) or over all classes; with
    ``per_image`` it is computed per image and averaged over the images that have a kept
    pixel (the reference averages images without one as 0). Sorting makes it
    :math:`O(N \log N)` per class; memory is :math:`O(N)` per class.

    Args:
        ignore_index: Target value of unlabelled pixels (given by the task).
        classes: ``"present"``: average over the classes that occur in the kept target
            pixels (of the batch, or of the image with ``per_image``); ``"all"``: over all
            C classes.
        per_image: Compute the loss per image and average over the images that have a
            kept pixel (the paper's image-mIoU variant); False pools the whole batch.

    """

    def __init__(
        self,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        classes: Classes = "present",
        per_image: bool = False,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.classes = classes
        self.per_image = per_image

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        logits, target, keep = prepare_logits(
            prediction, target, valid, self.ignore_index, "lovasz"
        )
        probs = torch.softmax(logits, dim=1).permute(0, 2, 3, 1)  # [B, H, W, C]
        if self.per_image:
            groups = [(probs[b][keep[b]], target[b][keep[b]]) for b in range(probs.shape[0])]
        else:
            groups = [(probs[keep], target[keep])]
        losses = [_lovasz_softmax_flat(p, t, self.classes) for p, t in groups if t.numel() > 0]
        present = [loss for loss in losses if loss is not None]
        total = torch.stack(present).mean() if present else _zero(logits)
        return pixcore.LossOutput(total, {"lovasz": total.detach()})


# --------------------------------------------------------------------------------------
# OHEM cross-entropy
# --------------------------------------------------------------------------------------


class OhemCrossEntropyLoss(pixcore.Loss):
    r"""Cross-entropy over the hardest kept pixels: online hard example mining.

    Pixels are ranked by :math:`p_t`, the softmax probability of their true class (no
    gradient flows through the selection); the lower, the harder (the larger their
    cross-entropy :math:`-\log p_t`). Out of the kept pixels :math:`K` of the batch
    (:math:`B` images), the selected set :math:`S` is

    * ``thresh`` set (default 0.7): the pixels with :math:`p_t < \text{thresh}`; if there
      are fewer than :math:`n = \min(\text{min\_kept} \cdot B, |K|)`, the :math:`n`
      hardest instead (OHEM of Shrivastava et al., CVPR 2016, as applied to pixels by the
      ``OhemCrossEntropy`` of HRNet-Semantic-Segmentation and mmsegmentation's
      ``OHEMPixelSampler``);
    * ``top_k`` set: the :math:`\lceil \text{top\_k} \cdot |K| \rceil` hardest pixels
      (bootstrapped cross-entropy, Wu, Shen and van den Hengel 2016);
    * both None: the :math:`\min(\text{min\_kept} \cdot B, |K|)` hardest pixels
      (``OHEMPixelSampler`` with ``thresh=None``);

    and the loss is :math:`\frac{1}{|S|}\sum_{i \in S} -\log p_{i,y_i}`. The references
    keep :math:`p_t < \max(\text{thresh}, p_{(n)})` with :math:`p_{(n)}` the
    :math:`n`-th smallest :math:`p_t`; this differs only on ties and when
    :math:`|K| \le n` (they then drop the easiest pixel, this loss keeps all). mmsegmentation
    also divides by the number of *all* pixels rather than :math:`|S|`. The part
    ``ohem_kept_fraction`` logs :math:`|S| / |K|`. With :math:`S` empty the loss is 0.

    Args:
        ignore_index: Target value of unlabelled pixels (given by the task).
        thresh: Probability threshold in ``(0, 1]``: keep the kept pixels whose probability
            of the true class is below it (at least ``min_kept`` per image). None: select
            by ``top_k``, or by ``min_kept`` alone.
        min_kept: Pixels per image kept at least (the hardest ones) with ``thresh``, and
            exactly when ``thresh`` and ``top_k`` are both None (mmsegmentation's
            OHEMPixelSampler).
        top_k: Keep this fraction (in ``(0, 1]``) of the kept pixels, the ones with the
            largest cross-entropy (needs ``thresh=None``).

    """

    def __init__(
        self,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        thresh: Fraction | None = 0.7,
        min_kept: Annotated[int, Field(ge=0)] = 100_000,
        top_k: Fraction | None = None,
    ) -> None:
        super().__init__()
        self.check_params(thresh, top_k)
        self.ignore_index = ignore_index
        self.thresh = thresh
        self.min_kept = min_kept
        self.top_k = top_k

    @staticmethod
    def check_params(thresh: float | None, top_k: float | None) -> None:
        """One selection rule at a time: ``thresh`` or ``top_k``."""
        if thresh is not None and top_k is not None:
            raise ValueError(
                f"thresh ({thresh}) and top_k ({top_k}) are two different selection rules; "
                "set thresh: null to keep the top_k fraction, or drop top_k"
            )

    def _select(self, p_true: Tensor, keep: Tensor) -> Tensor:
        """Boolean ``[B, H, W]`` mask of the selected (hard) kept pixels."""
        count = int(keep.sum())
        if self.top_k is not None:
            wanted = math.ceil(self.top_k * count)
        else:
            wanted = min(self.min_kept * keep.shape[0], count)
            if self.thresh is not None:
                below = keep & (p_true < self.thresh)
                if int(below.sum()) >= wanted:
                    return below
        if wanted >= count:
            return keep
        ranked = torch.where(keep, p_true, torch.full_like(p_true, math.inf))
        hardest = torch.topk(ranked.reshape(-1), wanted, largest=False).indices
        selected = torch.zeros(keep.numel(), dtype=torch.bool, device=keep.device)
        selected[hardest] = True
        return selected.reshape(keep.shape)

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        logits, target, keep = prepare_logits(
            prediction, target, valid, self.ignore_index, "ohem_cross_entropy"
        )
        log_pt = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        selected = self._select(log_pt.detach().exp(), keep)
        count = selected.sum()
        if int(count) == 0:
            total = _zero(logits)
            fraction = total.detach()
        else:
            total = torch.where(selected, -log_pt, torch.zeros_like(log_pt)).sum() / count
            fraction = (count / keep.sum()).to(total.dtype)
        return pixcore.LossOutput(
            total, {"ohem_cross_entropy": total.detach(), "ohem_kept_fraction": fraction}
        )

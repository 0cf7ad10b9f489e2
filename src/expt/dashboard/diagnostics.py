"""Layer diagnostics of a model, for the dashboard: weights, activations, gradients, filters, summary.

``<layer>`` is the module's name in the model followed by its class, e.g. ``0.Conv2d``.
None of the diagnostics changes the training numbers: the weight snapshots are copies, and the
histogram batch is run in eval mode (no dropout mask drawn, no batch-norm statistic updated)
with the random number generators forked and the parameters' gradients put back afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from expt.loss import classification_loss

# Modules whose output is their input in eval mode: their activation histogram would repeat the last one.
REPEATS_INPUT = (nn.Flatten, nn.Dropout, nn.Identity)
MAX_FILTER_TILES = 64  # PNG-encoding the grid every epoch grows with its area
MIN_TILE_PIXELS = 16  # small filters are enlarged to about this size (32 made the PNG 4x the pixels and 5x the time)
HISTOGRAM_BINS = 64
# Values per histogram at most: a larger tensor (a deep ConvNet's activations hold millions) is
# histogrammed on a fixed random sample of this many entries, which shows the same shape.
HISTOGRAM_SAMPLE = 1 << 16


# Modules a config adds or leaves out without changing the layers around them (regularization's batch norm and
# dropout, and the Identity a model keeps in batch norm's place without it): a layer's label does not count them,
# so that one layer has one label in every trial of a sweep
OPTIONAL_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout2d, nn.Identity)


def layer_label(model: nn.Module, module_name: str) -> str:
    """``<place>.<Class>``, e.g. ``0.Conv2d``, ``4.Linear``: where the module is in the model and what it is.

    A place in a sequence counts the layers before it other than batch norm and dropout, so that a model's hidden
    linear layer is ``4.Linear`` with or without them (by its index it was 4, 5 or 6 in one sweep's trials, and
    one chart mixed the output layer of some with the hidden layer of others). Named places stay as they are."""
    module = model.get_submodule(module_name)
    if not module_name:
        return type(module).__name__
    parent, place = model, []
    for part in module_name.split("."):
        child = parent.get_submodule(part)
        if part.isdigit() and isinstance(parent, (nn.Sequential, nn.ModuleList)):
            before = list(parent._modules.values())[: int(part)]  # by position (children() skips a reused one)
            part = str(sum(not isinstance(m, OPTIONAL_LAYERS) for m in before))
        place.append(part)
        parent = child
    return f"{'.'.join(place)}.{type(module).__name__}"


def weight_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable tensors of two or more dimensions (conv kernels, linear matrices), by layer label.

    Biases and batch-norm scales are left out: their norms are small and their ratios say little.
    """
    weights = {}
    for name, param in model.named_parameters():
        if param.requires_grad and param.dim() >= 2:
            module_name, _, attr = name.rpartition(".")
            label = layer_label(model, module_name)
            weights[label if attr == "weight" else f"{label}.{attr}"] = param
    return weights


def first_layer(model: nn.Module) -> Optional[tuple[str, torch.Tensor]]:
    """(label, weight) of the first weight tensor in the model's order: the layer that sees the pixels."""
    weights = weight_tensors(model)
    return next(iter(weights.items()), None)


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Run a diagnostic pass on ``model`` without changing what training does next.

    Eval mode (no dropout masks, batch-norm running statistics left alone), the random number
    generators forked, and the parameters' ``.grad`` put back as they were.
    """
    params = [p for p in model.parameters()]
    saved_grads = [p.grad for p in params]
    was_training = model.training
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        model.train(was_training)
        for p, g in zip(params, saved_grads):
            p.grad = g


def probe_layers(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, penalty: Any = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each layer's output and each weight tensor's gradient on the batch ``(x, y)``.

    One forward pass with hooks on the leaf modules (pass-through modules skipped) and one
    backward pass of the training loss (cross-entropy plus ``penalty()`` when given), without
    an optimizer step. Tensors come back detached, in float32, on the model's device.
    """
    activations: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None and not isinstance(module, REPEATS_INPUT):
            label = layer_label(model, name)

            def hook(_module: nn.Module, _inputs: Any, output: Any, label: str = label) -> None:
                if isinstance(output, torch.Tensor):
                    activations[label] = output.detach().float()

            handles.append(module.register_forward_hook(hook))
    weights = weight_tensors(model)
    try:
        with _untouched(model):
            for p in model.parameters():
                p.grad = None
            with torch.enable_grad():
                out = model(x)
                loss = classification_loss(out.float(), y)
                if penalty is not None:
                    loss = loss + penalty()
                loss.backward()
            gradients = {
                label: w.grad.detach().float() for label, w in weights.items() if w.grad is not None
            }
    finally:
        for handle in handles:
            handle.remove()
    return activations, gradients


def histogram_table(
    tensors: Sequence[torch.Tensor], bins: int = HISTOGRAM_BINS, max_values: int = HISTOGRAM_SAMPLE
) -> torch.Tensor:
    """The numbers of one TensorBoard histogram per tensor, computed where the tensors are, nothing read back.

    One row per tensor, float64: ``[min, max, count, sum, sum of squares, bins counts...]`` of its
    finite values, in ``bins`` equal buckets from min to max (a value equal to max in the last).
    A tensor of more than ``max_values`` entries is described by a random sample of that many,
    the same entries every time (all fields, the count included, are the sample's). All tensors
    are reduced together (segment reductions over their concatenation): a few kernels, whatever
    their number, and no host sync. :func:`histogram_fields` turns a row into TensorBoard's fields.
    """
    device = tensors[0].device
    flats = [t.detach().flatten() for t in tensors]
    flats = [f[_sample_positions(f.numel(), max_values, device)] if f.numel() > max_values else f for f in flats]
    sizes = tuple(f.numel() for f in flats)
    n = len(flats)
    values = torch.cat([f.float() for f in flats])
    seg, lengths = _segments(sizes, device)
    finite = torch.isfinite(values)

    def per_tensor(x: torch.Tensor, reduce: str, initial: float = 0.0) -> torch.Tensor:  # unsafe: no check, no sync
        return torch.segment_reduce(x, reduce, lengths=lengths, unsafe=True, initial=initial)

    lo = per_tensor(values.where(finite, math.inf), "min", math.inf)
    hi = per_tensor(values.where(finite, -math.inf), "max", -math.inf)
    kept = values.where(finite, 0.0).double()
    totals = torch.stack([per_tensor(finite.double(), "sum"), per_tensor(kept, "sum"), per_tensor(kept * kept, "sum")],
                         dim=1)
    width = (hi - lo)[seg]
    bucket = ((values - lo[seg]) / width * bins).floor().clamp(0, bins - 1)
    bucket = bucket.where(finite & (width > 0), 0.0).long()
    counts = torch.zeros(n * bins, device=device).index_add_(0, seg * bins + bucket, finite.float())  # exact: < 2**24
    return torch.cat([lo.double()[:, None], hi.double()[:, None], totals, counts.double().view(n, bins)], dim=1)


def histogram_fields(row: Sequence[float]) -> Optional[dict[str, Any]]:
    """The fields of a TensorBoard histogram from a row of :func:`histogram_table`; None when no value is finite.

    Laid out as TensorBoard's own histograms are: ``bucket_limits`` are the right edges, after
    a first, empty bucket whose limit is the minimum. A tensor whose finite values are all equal
    has one bucket.
    """
    lo, hi, num, total, squares, *counts = (float(v) for v in row)
    if num == 0:
        return None
    if hi > lo:
        edges = torch.linspace(lo, hi, len(counts) + 1, dtype=torch.float64).tolist()
    else:
        edges, counts = [lo, hi], [num]
    return {"min": lo, "max": hi, "num": int(num), "sum": total, "sum_squares": squares,
            "bucket_limits": edges, "bucket_counts": [0.0, *counts]}


def histogram_stats(
    values: torch.Tensor, bins: int = HISTOGRAM_BINS, max_values: int = HISTOGRAM_SAMPLE
) -> Optional[dict[str, Any]]:
    """The fields of a TensorBoard histogram of ``values`` (:func:`histogram_table` of one tensor, read back)."""
    return histogram_fields(histogram_table([values], bins, max_values)[0].tolist())


@functools.lru_cache(maxsize=32)
def _segments(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each entry of the concatenated tensors the index of the tensor it came from, and the tensors' sizes."""
    lengths = torch.tensor(sizes, device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), lengths, output_size=sum(sizes)), lengths


@functools.lru_cache(maxsize=32)
def _sample_positions(n: int, k: int, device: torch.device) -> torch.Tensor:
    """``k`` positions out of ``n``, drawn once from their own generator (training's random streams are untouched)."""
    generator = torch.Generator(device=device).manual_seed(n)
    return torch.randint(n, (k,), generator=generator, device=device)


def filter_grid(weight: torch.Tensor, input_shape: Optional[tuple[int, ...]] = None) -> Optional[torch.Tensor]:
    """The first layer's weights as one image (C, H, W) in [0, 1], one tile per filter or unit.

    A conv kernel (out, in, kh, kw) gives one kh x kw tile per filter; a linear layer's row is
    reshaped to the input image. Each tile is scaled to [0, 1] on its own, so the pattern shows
    whatever the filter's scale; 1- and 3-channel tiles are kept as grey or RGB, others averaged
    over channels. Small tiles are enlarged (nearest neighbour) to be visible. None when the
    weights do not form images (a linear layer on non-image input).
    """
    w = weight.detach().float().cpu()
    if w.dim() == 4:
        tiles = w
    elif w.dim() == 2:
        shape = tuple(input_shape or ())
        if len(shape) == 3 and math.prod(shape) == w.shape[1]:
            tiles = w.reshape(w.shape[0], *shape)
        elif len(shape) == 2 and math.prod(shape) == w.shape[1]:
            tiles = w.reshape(w.shape[0], 1, *shape)
        else:
            side = math.isqrt(w.shape[1])
            if side * side != w.shape[1]:
                return None
            tiles = w.reshape(w.shape[0], 1, side, side)
    else:
        return None
    tiles = tiles[:MAX_FILTER_TILES]
    if tiles.shape[1] not in (1, 3):
        tiles = tiles.mean(dim=1, keepdim=True)
    flat = tiles.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    tiles = (tiles - lo[:, None, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None, None]
    scale = max(1, MIN_TILE_PIXELS // max(tiles.shape[-2:]))
    if scale > 1:
        tiles = tiles.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    n, c, h, wd = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 2
    grid = torch.full((c, rows * (h + pad) + pad, cols * (wd + pad) + pad), 0.5)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (wd + pad)
        grid[:, top:top + h, left:left + wd] = tiles[i]
    return grid


def model_summary(model: nn.Module, input_shape: Optional[tuple[int, ...]] = None) -> str:
    """Markdown: one table row per layer with parameters (shapes and counts), the total, and the module tree."""
    rows = ["| layer | parameters | count |", "|---|---|---:|"]
    total = trainable = 0
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        count = sum(p.numel() for _, p in own)
        total += count
        trainable += sum(p.numel() for _, p in own if p.requires_grad)
        shapes = ", ".join(f"{n} {'x'.join(map(str, p.shape))}" for n, p in own)
        rows.append(f"| {layer_label(model, name)} | {shapes} | {count:,} |")
    head = f"**{type(model).__name__}**: {total:,} parameters ({trainable:,} trainable)"
    if input_shape:
        head += f", input {'x'.join(map(str, input_shape))}"
    return "\n".join([head, "", *rows, "", code_block(str(model))])


def code_block(text: str) -> str:
    """A fenced Markdown code block (TensorBoard's text tab renders Markdown with fenced code): shown verbatim in a
    fixed-width font wherever it stands. An indented block would continue a list item that comes before it, as a
    paragraph whose underscores became italics (``_target_`` read as *target*)."""
    return f"```\n{text.rstrip()}\n```"

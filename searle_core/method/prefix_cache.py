"""Pseudo-word prompts encoded from their first ``$`` on, the text before it computed once: a switchable
speed-up of :func:`~searle_core.method.encoding.encode_with_pseudo_tokens` (``prefix_cache=False``: the plain one).

CLIP's text tower is causal, so the hidden states before a prompt's first ``$`` do not depend on the
pseudo-word. OTI encodes the same templates hundreds of times with only ``$`` changing: the keys and
values of each distinct prefix are computed once (no gradient) and every step runs only the suffix.
The result equals the plain encoder up to floating-point rounding (``tests/test_oti.py`` checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from searle_core.method.encoding import encode_with_pseudo_tokens, require_pseudo_word, text_head

# Splitting a batch into two passes of different suffix lengths pays when it saves this share of
# the padded positions and enough arithmetic to cover a second pass's fixed per-operation costs
# (kernel launches, thread wake-ups): a tiny text tower (a small model's) is never split.
_SPLIT_SAVING = 0.2
_SPLIT_MIN_FLOPS = 5e8


def _standard_blocks(model: nn.Module) -> bool:
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if not blocks or not getattr(model.transformer, "batch_first", True):
        return False
    for b in blocks:
        attn = getattr(b, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or attn.bias_k is not None:
            return False
        if not attn.batch_first or hasattr(b, "ln_1_kv") or not all(hasattr(b, a) for a in ("ln_1", "ln_2", "mlp")):
            return False
        if [n for n, _ in b.mlp.named_children()] != ["c_fc", "gelu", "c_proj"]:  # run as three calls below
            return False
    return getattr(model, "text_pool_type", "argmax") == "argmax"


class PrefixCachedEncoder:
    """Text features of ``$`` prompts (gradients flow to the tokens), reusing the keys and values of
    their constant prefixes. ``enabled=False``, or a model whose blocks are not open_clip's standard
    ones, runs the plain encoder instead."""

    def __init__(self, model: nn.Module, pseudo_token_id: int, enabled: bool = True):
        self.model = model
        self.pseudo_token_id = pseudo_token_id
        self.enabled = enabled and _standard_blocks(model)
        self._kv: dict[tuple, torch.Tensor] = {}  # (autocast?, prefix ids) -> (layers, 2, heads, p, head_dim)
        self._cast: dict[torch.dtype | None, list[tuple]] = {}  # per block: in, out, fc, proj weights
        width = model.token_embedding.weight.shape[1]
        layers = len(model.transformer.resblocks) if self.enabled else 0
        # Forward and input-gradient matmuls of one position through every block (~12 width^2 each way).
        self._flops_per_position = 2 * 2 * 12 * width * width * layers

    def __len__(self) -> int:
        return len(self._kv)

    def __call__(self, tokens: torch.Tensor, pseudo_tokens: torch.Tensor) -> torch.Tensor:
        """(N, embed_dim) unnormalised features; gradients flow to ``pseudo_tokens`` (N, width)."""
        if not self.enabled:
            return encode_with_pseudo_tokens(self.model, tokens, pseudo_tokens, self.pseudo_token_id)
        is_pseudo = tokens == self.pseudo_token_id
        require_pseudo_word(is_pseudo, self.pseudo_token_id)
        first = is_pseudo.int().argmax(dim=1)
        eot = tokens.argmax(dim=1)
        suffix = (eot - first + 1).tolist()
        order = sorted(range(len(suffix)), key=suffix.__getitem__)
        cut = self._split_point([suffix[i] for i in order], self._flops_per_position)
        if cut is None:
            return self._encode(tokens, pseudo_tokens, first, eot)
        parts = [order[:cut], order[cut:]]
        outs = [
            self._encode(tokens[idx], pseudo_tokens[idx], first[idx], eot[idx])
            for idx in (torch.tensor(p, device=tokens.device) for p in parts)
        ]
        result = torch.empty(len(suffix), outs[0].shape[1], dtype=outs[0].dtype, device=outs[0].device)
        return result.index_put((torch.tensor(parts[0] + parts[1], device=result.device),), torch.cat(outs))

    @staticmethod
    def _split_point(lengths: list[int], flops_per_position: float) -> int | None:
        """Where to cut the sorted suffix lengths into two padded passes, if that saves enough."""
        n, one = len(lengths), len(lengths) * lengths[-1]
        best = min(((i * lengths[i - 1] + (n - i) * lengths[-1], i) for i in range(1, n)), default=(one, None))
        saved = one - best[0]
        if saved < _SPLIT_SAVING * one or saved * flops_per_position < _SPLIT_MIN_FLOPS:
            return None
        return best[1]

    # ---- the transformer, split at the first '$' ------------------------------------------------
    def _layers(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        prefix_kv: torch.Tensor | None,
        keep: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run every block on ``x`` (N, S, width); queries attend to ``prefix_kv`` then to ``x``."""
        blocks = self.model.transformer.resblocks
        for layer, (block, (w_in, w_out, w_fc, w_proj)) in enumerate(zip(blocks, self._weights(x.device.type))):
            attn, mlp = block.attn, block.mlp
            heads = attn.num_heads
            n, s, width = x.shape
            q, k, v = F.linear(block.ln_1(x), w_in, attn.in_proj_bias).chunk(3, dim=-1)
            q, k, v = (t.reshape(n, s, heads, width // heads).transpose(1, 2) for t in (q, k, v))
            if keep is not None:
                keep.append(torch.stack([k, v], dim=1))
            if prefix_kv is not None:
                k = torch.cat([prefix_kv[:, layer, 0].to(k.dtype), k], dim=2)
                v = torch.cat([prefix_kv[:, layer, 1].to(v.dtype), v], dim=2)
            if x.device.type == "cpu":  # attention in fp32: under bf16 autocast its backward is ~8x slower there
                with torch.autocast("cpu", enabled=False):
                    o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(q.dtype)
            else:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.ls_1(F.linear(o.transpose(1, 2).reshape(n, s, width), w_out, attn.out_proj.bias))
            h = mlp.gelu(F.linear(block.ln_2(x), w_fc, mlp.c_fc.bias))
            x = x + block.ls_2(F.linear(h, w_proj, mlp.c_proj.bias))
        return x

    def _weights(self, device_type: str) -> list[tuple[torch.Tensor, ...]]:
        """Each block's matrices, under autocast cast once to its dtype: autocast caches only casts of weights
        that need a gradient, and re-casting CLIP's frozen ones at every call costs as much as a bf16 matmul."""
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        if dtype not in self._cast:
            blocks = self.model.transformer.resblocks
            mats = [
                (b.attn.in_proj_weight, b.attn.out_proj.weight, b.mlp.c_fc.weight, b.mlp.c_proj.weight) for b in blocks
            ]
            self._cast[dtype] = [tuple(w.detach().to(dtype or w.dtype) for w in ws) for ws in mats]
        return self._cast[dtype]

    @torch.no_grad()
    def _prefix_kv(self, prefixes: list[tuple[int, ...]]) -> torch.Tensor:
        """(len(prefixes), layers, 2, heads, max_len, head_dim) keys/values, right-padded with zeros."""
        model = self.model
        device = model.token_embedding.weight.device
        amp = torch.is_autocast_enabled(device.type)
        cast = model.transformer.get_cast_dtype()
        for p in sorted({p for p in prefixes if (amp, p) not in self._kv}):
            # One prefix per pass: its numbers then never depend on which prefixes came along in the
            # same batch, so a resumed or sharded run reproduces an uninterrupted one bit for bit.
            ids = torch.tensor([p], device=device)
            x = model.token_embedding(ids).to(cast) + model.positional_embedding[: len(p)].to(cast)
            causal = torch.ones(len(p), len(p), dtype=torch.bool, device=device).tril()
            keep: list[torch.Tensor] = []
            self._layers(x, causal, None, keep)
            self._kv[(amp, p)] = torch.stack(keep, dim=1)[0]  # (layers, 2, heads, len(p), head_dim)
        longest = max(map(len, prefixes))
        out = [F.pad(self._kv[(amp, p)], (0, 0, 0, longest - len(p))) for p in prefixes]
        return torch.stack(out)

    def _encode(
        self, tokens: torch.Tensor, pseudo_tokens: torch.Tensor, first: torch.Tensor, eot: torch.Tensor
    ) -> torch.Tensor:
        model = self.model
        n, context = tokens.shape
        device = tokens.device
        prefixes = [tuple(row[:f].tolist()) for row, f in zip(tokens.cpu(), first.tolist())]
        unique = sorted(set(prefixes))
        which = torch.tensor([unique.index(p) for p in prefixes], device=device)
        prefix_kv = self._prefix_kv(unique)[which]  # (N, layers, 2, heads, P, head_dim)
        longest_prefix = prefix_kv.shape[-2]
        length = int((eot - first).max()) + 1
        pos = (first.unsqueeze(1) + torch.arange(length, device=device)).clamp(max=context - 1)
        ids = tokens.gather(1, pos)
        cast = model.transformer.get_cast_dtype()
        emb = model.token_embedding(ids)
        pseudo = pseudo_tokens.to(emb.dtype).unsqueeze(1).expand_as(emb)
        # The suffix starts at the first '$', the only one that takes the token (later ones stay '$').
        at_first = (torch.arange(length, device=device) == 0).unsqueeze(0).expand(n, length)
        x = torch.where(at_first.unsqueeze(-1), pseudo, emb).to(cast)
        x = x + model.positional_embedding[pos].to(cast)
        # Query j of row i sees the row's own prefix (not its padding) and suffix positions <= j.
        see_prefix = torch.arange(longest_prefix, device=device) < first.unsqueeze(1)
        see_suffix = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        mask = torch.cat(
            [
                see_prefix.unsqueeze(1).expand(n, length, longest_prefix),
                see_suffix.unsqueeze(0).expand(n, length, length),
            ],
            dim=2,
        ).unsqueeze(1)
        return text_head(model, self._layers(x, mask, prefix_kv), eot - first)

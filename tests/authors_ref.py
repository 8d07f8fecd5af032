"""An independent re-statement of the authors' Micron-BERT forward pass (their
models/mae.py, vision_transformer.py), written against a raw state dict, and a
builder of checkpoint files in their format (docs/checkpoints.md)."""
import argparse

import torch
import torch.nn.functional as F


def vit_forward(sd, prefix, x, patch, heads, eps=1e-6):
    """Their Backbone.forward: tokens (B, 1+N, D) after the final norm."""
    x = F.conv2d(x, sd[prefix + "patch_embed.proj.weight"], sd[prefix + "patch_embed.proj.bias"],
                 stride=patch).flatten(2).transpose(1, 2)
    b, _, d = x.shape
    x = torch.cat([sd[prefix + "cls_token"].expand(b, -1, -1), x], 1) + sd[prefix + "pos_embed"]
    i = 0
    while f"{prefix}blocks.{i}.norm1.weight" in sd:
        blk = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (d,), sd[blk + "norm1.weight"], sd[blk + "norm1.bias"], eps)
        qkv = F.linear(h, sd[blk + "attn.qkv.weight"], sd[blk + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1)
        h = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        x = x + F.linear(h, sd[blk + "attn.proj.weight"], sd[blk + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), sd[blk + "norm2.weight"], sd[blk + "norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, sd[blk + "mlp.fc1.weight"], sd[blk + "mlp.fc1.bias"])),
                     sd[blk + "mlp.fc2.weight"], sd[blk + "mlp.fc2.bias"])
        x = x + h
        i += 1
    return F.layer_norm(x, (d,), sd[prefix + "norm.weight"], sd[prefix + "norm.bias"], eps)


def extract_features(sd, x, patch=8, heads=4):
    return vit_forward(sd, "backbone.", x, patch, heads)[:, 1:]


def cross_attention(sd, x, x_ref, diag_att):
    """Their att([x, x_ref, x]) with one head: (out after proj, attn)."""
    lin = lambda t, n: F.linear(t, sd[f"att.{n}.weight"], sd[f"att.{n}.bias"])  # noqa: E731
    q, k, v = lin(x, "to_q"), lin(x_ref, "to_k"), lin(x, "to_v")
    attn = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1)
    if diag_att:
        d = torch.diagonal(attn, dim1=-2, dim2=-1)
        return lin(d.unsqueeze(-1) * v, "proj"), d
    return lin(attn @ v, "proj"), torch.diagonal(attn, dim1=-2, dim2=-1)


def _vit_shapes(prefix, d, depth, n, patch, c, mlp=4):
    s = {prefix + "cls_token": (1, 1, d), prefix + "pos_embed": (1, n + 1, d),
         prefix + "patch_embed.proj.weight": (d, c, patch, patch), prefix + "patch_embed.proj.bias": (d,),
         prefix + "norm.weight": (d,), prefix + "norm.bias": (d,)}
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        s.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                  b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                  b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "mlp.fc1.weight": (mlp * d, d),
                  b + "mlp.fc1.bias": (mlp * d,), b + "mlp.fc2.weight": (d, mlp * d), b + "mlp.fc2.bias": (d,)})
    return s


def _head_shapes(prefix, d, out, hidden=2048, bottleneck=256):
    return {prefix + "mlp.0.weight": (hidden, d), prefix + "mlp.0.bias": (hidden,),
            prefix + "mlp.2.weight": (hidden, hidden), prefix + "mlp.2.bias": (hidden,),
            prefix + "mlp.4.weight": (bottleneck, hidden), prefix + "mlp.4.bias": (bottleneck,),
            prefix + "last_layer.weight_g": (out, 1), prefix + "last_layer.weight_v": (out, bottleneck)}


def make_authors_state_dict(img=32, patch=8, d=64, depth=2, dec_d=32, dec_depth=1, dino=True,
                            out_dim=16, aux_cls=False, seed=0):
    n = (img // patch) ** 2
    shapes = _vit_shapes("backbone.", d, depth, n, patch, 3)
    shapes.update({f"att.{m}.{p}": ((d, d) if p == "weight" else (d,))
                   for m in ("to_q", "to_k", "to_v", "proj") for p in ("weight", "bias")})
    shapes.update({"decoder_embed.weight": (dec_d, d), "decoder_embed.bias": (dec_d,),
                   "decoder_pos_embed": (1, n + 1, dec_d), "decoder_norm.weight": (dec_d,),
                   "decoder_norm.bias": (dec_d,), "decoder_pred.weight": (patch * patch * 3, dec_d),
                   "decoder_pred.bias": (patch * patch * 3,)})
    shapes.update({k.replace("backbone.", "decoder_", 1): v for k, v in
                   _vit_shapes("backbone.", dec_d, dec_depth, n, patch, 3).items() if ".blocks." in k})
    if dino:
        shapes.update(_vit_shapes("teacher.backbone.", d, depth, n, patch, 3))
        shapes.update(_head_shapes("student.head.", d, out_dim, 64, 32))
        shapes.update(_head_shapes("teacher.head.", d, out_dim, 64, 32))
        shapes["dino_loss_fn.center"] = (1, out_dim)
    if aux_cls:
        shapes.update({"fc.weight": (1, d), "fc.bias": (1,)})
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(*s, generator=g) * (0.2 if len(s) > 1 else 0.1) +
          (1.0 if k.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else 0.0)
          for k, s in shapes.items()}
    if dino:
        for k in list(sd):
            if k.startswith("backbone."):
                sd["student." + k] = sd[k]  # their student wraps the same backbone module
        sd["student.head.last_layer.weight_g"] = torch.ones(out_dim, 1)
        sd["teacher.head.last_layer.weight_g"] = torch.ones(out_dim, 1)
    return sd


def save_authors_checkpoint(path, sd, diag_att, img=32, prefix="module.", **args):
    ns = argparse.Namespace(model_name="mae_vit_small_patch8", img_size=img, diag_att=diag_att,
                            enable_dino=any(k.startswith("teacher.") for k in sd), has_decoder=True,
                            **args)
    torch.save({"model": {prefix + k: v for k, v in sd.items()}, "args": ns, "epoch": 199,
                "optimizer": {"state": {}, "param_groups": []}}, path)

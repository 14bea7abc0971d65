#!/usr/bin/env python3
"""Golden-file generator for the Rust StableKeypoints tests.

Run from the repository root:

    python tests/reference/make_goldens.py

It writes (deterministically, CPU, float32, 2 torch threads):

  tests/data/ops_golden.safetensors        resampling / warping / DDIM / Gaussian references
  tests/data/tiny-sd1/{unet,vae}/           tiny random SD1-style models (fp32 files)
  tests/data/tiny-sd2/{unet,vae}/           tiny random SD2-style models (fp16 variant files)
  tests/data/tiny-sdxl/{unet,vae}/          tiny random SDXL-base-style models (fp16 variant files)
  tests/data/forms/tiny-sdX/                each family's weights in other forms (section F)
  tests/data/tiny-sdX/tokens.safetensors    embeddings E [64, context_dim] + K=8 token indices
  tests/data/tiny-sdX/image.png             128x128 synthetic RGB picture (== golden `image`)
  tests/data/tiny-sdX/image_wide.png        160x120 synthetic RGB picture (no golden)
  tests/data/tiny-sdX/golden.safetensors    maps / keypoints computed as in shared/method.md
  tests/data/tiny-sd1/train_golden.safetensors  one training step (candidates, FPS, losses, dL/dE)
  tests/data/fidelity_golden.safetensors    the reference's metrics and regressors on fixed data
  tests/data/reference-tokens/*.pt          torch.save files as the reference's main.py writes
  tests/reference/keys-*.txt                key lists (name, dtype, shape) of the saved files

`--only base,sdxl,forms` writes only those groups of outputs.

The DDIM scheduler is constructed exactly as the reference's `load_ldm` constructs it
(steps_offset left at its default 0, then `set_timesteps(50)`), and the maps are taken at its
`noise_level` -1, i.e. the last of its timesteps: t = 0.

The StableKeypoints computation (method.md sections 1, 2, 4) is re-implemented here on top of
diffusers: a recording attention processor is installed on the up-path cross-attention layers;
it records the upsampled-query softmax maps and then calls the layer's original processor so the
forward pass itself is unchanged.
"""

import json
import math
import os
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import diffusers
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

torch.set_num_threads(2)
torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
REF = os.path.join(ROOT, "tests", "reference")

# Settings of the tiny goldens.
S = 128          # input size
R = 64           # map_res (feature_upsample_res)
NOISE_LEVEL = -1  # the reference's default: the last DDIM timestep
N_TOK = 64       # number of tokens
K = 8            # selected tokens
NUM_LAYERS = 4   # recorded layers
VAE_SCALE = 0.18215  # SD 1.x / 2.x; SDXL's VAE config says 0.13025


# --------------------------------------------------------------------------------------------
# helpers


def affine_theta(a_deg, s, tx, ty):
    """theta = [[cos*s, sin*s, tx], [-sin*s, cos*s, ty]] (float64 maths, float32 result)."""
    a = math.radians(a_deg)
    th = [[math.cos(a) * s, math.sin(a) * s, tx], [-math.sin(a) * s, math.cos(a) * s, ty]]
    return torch.tensor(th, dtype=torch.float64).to(torch.float32)


def inverse_theta(theta):
    """Invert [[theta],[0,0,1]] (in float64, from the float32 theta) and keep the top 2 rows."""
    m = torch.eye(3, dtype=torch.float64)
    m[:2] = theta.to(torch.float64)
    return torch.linalg.inv(m)[:2].to(torch.float32)


def warp(x, theta):
    """affine_grid + grid_sample, bilinear, zeros padding, align_corners=False. x: [B,C,H,W]."""
    grid = F.affine_grid(theta[None].expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_scheduler():
    """The reference's scheduler: these arguments (steps_offset stays at its default 0), then
    set_timesteps(50) before the pipeline is built (whose later steps_offset rewrite does not
    recompute the timesteps)."""
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    sched.set_timesteps(50)
    # diffusers 0.8.0 (the reference's pin) sets (arange(50) * 20).round()[::-1] + steps_offset.
    want = (np.arange(0, 50) * (1000 // 50)).round()[::-1].astype(np.int64) + 0
    assert np.array_equal(sched.timesteps.numpy(), want), sched.timesteps
    return sched


T = int(make_scheduler().timesteps[NOISE_LEVEL].item())
assert T == 0, T


def gaussian_peak1(res, row, col, sigma):
    """Unnormalised Gaussian (peak 1) on a res x res grid, pixel centres at +0.5, centred on the
    centre of pixel (row, col): exp(-((y-cy)^2 + (x-cx)^2) / (2 sigma^2))."""
    c = torch.arange(res, dtype=torch.float64) + 0.5
    cy, cx = row + 0.5, col + 0.5
    d2 = (c[:, None] - cy) ** 2 + (c[None, :] - cx) ** 2
    return torch.exp(-d2 / (2.0 * sigma * sigma)).to(torch.float32)


def file_size(path):
    return os.path.getsize(path)


def describe(name, t):
    if t.dtype in (torch.int64, torch.int32):
        return f"  {name:28s} {str(t.dtype):14s} {list(t.shape)} values {t.flatten()[:8].tolist()}"
    tf = t.double()
    return (f"  {name:28s} {str(t.dtype):14s} {list(t.shape)} "
            f"min {tf.min().item():+.5g} max {tf.max().item():+.5g} mean {tf.mean().item():+.5g}")


_ST_DTYPES = {torch.float64: ("F64", 8), torch.float32: ("F32", 4), torch.float16: ("F16", 2),
              torch.int64: ("I64", 8), torch.int32: ("I32", 4), torch.uint8: ("U8", 1)}


def write_safetensors(path, tensors, metadata=None):
    """Byte-deterministic safetensors writer (the library's own writer emits the metadata map in
    hash order, so its files differ from run to run). Same layout rules as the library: header
    JSON padded with spaces to a multiple of 8, tensors ordered by (dtype size desc, name)."""
    order = sorted(tensors, key=lambda k: (-_ST_DTYPES[tensors[k].dtype][1], k))
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    for k in order:
        t = tensors[k]
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[k] = {"dtype": _ST_DTYPES[t.dtype][0], "shape": list(t.shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    # round-trip check with the reference reader
    back = load_file(path)
    assert back.keys() == tensors.keys()
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and torch.equal(back[k], tensors[k]), k
    if metadata:
        with safe_open(path, framework="pt") as f:
            assert f.metadata() == {k: str(v) for k, v in metadata.items()}


def save_st(path, tensors, metadata=None):
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_safetensors(path, tensors, metadata)
    print(f"wrote {os.path.relpath(path, ROOT)} ({file_size(path)} bytes)")
    for k in sorted(tensors):
        print(describe(k, tensors[k]))


def key_lines(path):
    lines = []
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        if meta:
            lines.append("# metadata: " + json.dumps(dict(sorted(meta.items()))))
        for k in sorted(f.keys()):
            sl = f.get_slice(k)
            lines.append(f"{k}\t{sl.get_dtype()}\t{list(sl.get_shape())}")
    return lines


# --------------------------------------------------------------------------------------------
# A) ops goldens


def make_ops_goldens():
    g = torch.Generator().manual_seed(1234)
    out = {}

    x = torch.randn(2, 3, 5, 5, generator=g)
    out["bicubic_in"] = x
    for n in (13, 16, 3):
        out[f"bicubic_out_{n}"] = F.interpolate(x, size=(n, n), mode="bicubic", align_corners=False)

    x = torch.randn(1, 2, 4, 6, generator=g)
    out["bicubic_rect_in"] = x
    out["bicubic_rect_out"] = F.interpolate(x, size=(9, 11), mode="bicubic", align_corners=False)

    x = torch.randn(1, 2, 4, 6, generator=g)
    out["bilinear_in"] = x
    out["bilinear_out"] = F.interpolate(x, size=(11, 9), mode="bilinear", align_corners=False)
    x = torch.randn(1, 3, 8, 8, generator=g)
    out["bilinear_sq_in"] = x
    out["bilinear_sq_out"] = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)

    x = torch.randn(1, 3, 12, 10, generator=g)
    out["warp_in"] = x
    params = [(10, 0.9, 0.1, -0.2), (-15, 0.8, -0.25, 0.25), (0, 1.0, 0.0, 0.0)]
    for i, p in enumerate(params):
        th = affine_theta(*p)
        inv = inverse_theta(th)
        w = warp(x, th)
        out[f"warp_theta_{i}"] = th[None]
        out[f"warp_inv_theta_{i}"] = inv[None]
        out[f"warp_out_{i}"] = w
        out[f"warp_back_{i}"] = warp(w, inv)

    sched = make_scheduler()
    out["alphas_cumprod"] = sched.alphas_cumprod.to(torch.float64)
    # The same schedule computed entirely in float64 (diffusers computes it in float32).
    betas64 = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    out["alphas_cumprod_f64"] = torch.cumprod(1.0 - betas64, dim=0)
    out["ddim_timesteps"] = sched.timesteps.to(torch.int64)
    assert out["ddim_timesteps"][0].item() == 980 and out["ddim_timesteps"][-1].item() == 0

    # PIL's resize(BILINEAR) (the reference's CelebA / DeepFashion / custom loaders): on float
    # images ("F", no rounding: the filter itself) and on RGB8 (what those loaders feed).
    rng = np.random.RandomState(7)
    for i, ((w, h), size) in enumerate([((37, 23), 64), ((150, 90), 64), ((100, 40), 48),
                                         ((16, 64), 64)]):
        arr = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
        out[f"pil_in_{i}"] = torch.from_numpy(arr)
        chans = [np.asarray(Image.fromarray(arr[..., c].astype(np.float32))
                            .resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
                 for c in range(3)]
        out[f"pil_f_{i}"] = torch.from_numpy(np.stack(chans) / 255.0).to(torch.float32)
        out[f"pil_u8_{i}"] = torch.from_numpy(np.asarray(
            Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)).copy())

    out["gauss_sigma2_R16_at_5_9"] = gaussian_peak1(16, 5, 9, 2.0)
    assert out["gauss_sigma2_R16_at_5_9"][5, 9].item() == 1.0

    save_st(os.path.join(DATA, "ops_golden.safetensors"), out)


# --------------------------------------------------------------------------------------------
# B) tiny models


UNET_COMMON = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    norm_num_groups=8,
)

VAE_CFG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=128,
)

MODELS = {
    "tiny-sd1": dict(
        unet=dict(UNET_COMMON, cross_attention_dim=32, attention_head_dim=2),
        fp16=False,
        seed=1000,
    ),
    "tiny-sd2": dict(
        unet=dict(
            UNET_COMMON,
            cross_attention_dim=48,
            attention_head_dim=(2, 2, 4, 4),
            use_linear_projection=True,
            upcast_attention=True,
        ),
        fp16=True,
        seed=2000,
    ),
}

# SDXL base in miniature (maps at R = 32 keep its golden small): a plain first block, per-block transformer depth, linear
# projections, the text_time added embedding (SDXL's 256-wide time-id embedding, so that a
# single file's architecture is inferred as for real SDXL files), heads of width <= 64 as
# SDXL's 64-wide heads give, and an SDXL-scaled VAE. fp16 files keep it small.
POOLED_XL = 32
MODELS_XL = {
    "tiny-sdxl": dict(
        unet=dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            transformer_layers_per_block=(1, 1, 2),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(1, 1, 1),
            cross_attention_dim=64,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=POOLED_XL + 6 * 256,
            norm_num_groups=8,
        ),
        vae=dict(VAE_CFG, block_out_channels=(8, 8, 16, 16), scaling_factor=0.13025,
                 force_upcast=True),
        fp16=True,
        seed=3000,
        map_res=32,
        layers=["up_blocks.0.attentions.0.transformer_blocks.0.attn2",
                "up_blocks.0.attentions.0.transformer_blocks.1.attn2",
                "up_blocks.0.attentions.1.transformer_blocks.0.attn2",
                "up_blocks.0.attentions.1.transformer_blocks.1.attn2"],
    ),
}


@torch.no_grad()
def reinit(model, seed):
    """Deterministically re-initialise EVERY parameter (no zero-init layers left)."""
    g = torch.Generator().manual_seed(seed)
    done = set()
    for _, mod in model.named_modules():
        if isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if mod.weight is not None:
                mod.weight.copy_(1.0 + 0.1 * torch.randn(mod.weight.shape, generator=g))
                done.add(id(mod.weight))
            if mod.bias is not None:
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
                done.add(id(mod.bias))
        elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            w = mod.weight
            fan_in = w[0].numel()
            w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(fan_in))
            done.add(id(w))
            if mod.bias is not None:
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=g))
                done.add(id(mod.bias))
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not missed, f"parameters not re-initialised: {missed}"
    for n, p in model.named_parameters():
        assert p.abs().max().item() > 0, n


def build_and_save_models(name, spec):
    d = os.path.join(DATA, name)
    unet = UNet2DConditionModel(**spec["unet"])
    reinit(unet, spec["seed"])
    vae = AutoencoderKL(**spec.get("vae", VAE_CFG))
    reinit(vae, spec["seed"] + 1)
    unet.eval()
    vae.eval()

    udir, vdir = os.path.join(d, "unet"), os.path.join(d, "vae")
    if spec["fp16"]:
        unet = unet.half()
        vae = vae.half()
        unet.save_pretrained(udir, variant="fp16", safe_serialization=True)
        vae.save_pretrained(vdir, variant="fp16", safe_serialization=True)
        unet_l = UNet2DConditionModel.from_pretrained(udir, variant="fp16", torch_dtype=torch.float16)
        vae_l = AutoencoderKL.from_pretrained(vdir, variant="fp16", torch_dtype=torch.float16)
        unet_l, vae_l = unet_l.float(), vae_l.float()
        ref_u, ref_v = unet.float(), vae.float()
        fname = "diffusion_pytorch_model.fp16.safetensors"
    else:
        unet.save_pretrained(udir, safe_serialization=True)
        vae.save_pretrained(vdir, safe_serialization=True)
        unet_l = UNet2DConditionModel.from_pretrained(udir, torch_dtype=torch.float32)
        vae_l = AutoencoderKL.from_pretrained(vdir, torch_dtype=torch.float32)
        ref_u, ref_v = unet, vae
        fname = "diffusion_pytorch_model.safetensors"
    # reloaded weights must equal what we built (fp16-rounded for sd2)
    for a, b in ((unet_l, ref_u), (vae_l, ref_v)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == torch.float32, k
            assert torch.equal(sa[k], sb[k]), k
    unet_l.eval()
    vae_l.eval()

    files = {"unet": os.path.join(udir, fname), "vae": os.path.join(vdir, fname)}
    for k, p in files.items():
        assert os.path.exists(p), p
        print(f"wrote {os.path.relpath(p, ROOT)} ({file_size(p)} bytes)")
    return unet_l, vae_l, files


# --------------------------------------------------------------------------------------------
# synthetic pictures


def synthetic_picture(w, h, variant):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (xx + 0.5) / w, (yy + 0.5) / h
    img = np.zeros((h, w, 3), dtype=np.float64)
    # smooth background gradient
    img[..., 0] = 0.15 + 0.55 * u
    img[..., 1] = 0.25 + 0.45 * v
    img[..., 2] = 0.6 - 0.3 * u * v + 0.1 * np.sin(6.0 * u + 2.0 * variant)

    def disc(cx, cy, r, col, soft=1.5):
        d = np.sqrt((xx + 0.5 - cx * w) ** 2 + (yy + 0.5 - cy * h) ** 2)
        a = np.clip((r * min(w, h) - d) / soft + 0.5, 0.0, 1.0)[..., None]
        img[:] = img * (1 - a) + np.array(col) * a

    def rect(x0, y0, x1, y1, col):
        m = ((u >= x0) & (u < x1) & (v >= y0) & (v < y1))[..., None]
        img[:] = np.where(m, np.array(col), img)

    if variant == 0:
        rect(0.08, 0.62, 0.38, 0.9, (0.95, 0.85, 0.1))
        disc(0.3, 0.3, 0.16, (0.9, 0.1, 0.15))
        disc(0.72, 0.62, 0.2, (0.1, 0.35, 0.9))
        rect(0.6, 0.08, 0.92, 0.22, (0.05, 0.75, 0.2))
        disc(0.52, 0.82, 0.07, (0.98, 0.98, 0.98))
    else:
        disc(0.25, 0.6, 0.22, (0.2, 0.8, 0.3))
        rect(0.5, 0.15, 0.85, 0.5, (0.85, 0.2, 0.7))
        disc(0.75, 0.78, 0.12, (1.0, 0.55, 0.0))
        rect(0.1, 0.1, 0.3, 0.25, (0.05, 0.05, 0.3))
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def write_png(path, arr):
    Image.fromarray(arr, mode="RGB").save(path)
    back = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(back, arr)
    print(f"wrote {os.path.relpath(path, ROOT)} ({file_size(path)} bytes, {arr.shape[1]}x{arr.shape[0]})")


def png_to_tensor(arr):
    # float32 division, exactly like u8 as f32 / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


# --------------------------------------------------------------------------------------------
# C) StableKeypoints maps


class Recorder:
    def __init__(self, latent_side, res, num_layers):
        self.max_side = latent_side // 2
        self.res = res
        self.num_layers = num_layers
        self.reset()

    def reset(self):
        self.maps = []       # per recorded layer: [N, R, R]
        self.sides = []
        self.names = []
        self.inputs = []     # per recorded layer: [1, c, s, s]
        self.all_calls = []  # (name, side) of every up-path attn2 call, in execution order


class RecordingProcessor:
    """Wraps the layer's original processor; records the method.md section 2 maps."""

    def __init__(self, recorder, name, inner):
        self.rec = recorder
        self.name = name
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        rec = self.rec
        b, n, c = hidden_states.shape
        s = math.isqrt(n)
        assert s * s == n
        rec.all_calls.append((self.name, s))
        if len(rec.maps) < rec.num_layers and s <= rec.max_side:
            assert b == 1 and encoder_hidden_states is not None
            x = hidden_states.reshape(b, s, s, c).permute(0, 3, 1, 2)  # [1, c, s, s]
            x_up = F.interpolate(x, size=(rec.res, rec.res), mode="bicubic", align_corners=False)
            x_up = x_up.permute(0, 2, 3, 1).reshape(b, rec.res * rec.res, c)
            q = attn.to_q(x_up)
            k = attn.to_k(encoder_hidden_states)
            h = attn.heads
            d = q.shape[-1] // h
            q = q.view(b, -1, h, d).transpose(1, 2)            # [1, h, RR, d]
            k = k.view(b, -1, h, d).transpose(1, 2)            # [1, h, N, d]
            logits = (q @ k.transpose(-1, -2)) * attn.scale    # [1, h, RR, N]
            assert abs(attn.scale - d ** -0.5) < 1e-12
            a = logits.softmax(dim=-1)
            m = a.mean(dim=(0, 1))                             # [RR, N]
            ntok = m.shape[-1]
            rec.maps.append(m.transpose(0, 1).reshape(ntok, rec.res, rec.res))
            rec.sides.append(s)
            rec.names.append(self.name)
            rec.inputs.append(x.clone())
            rec.logit_std = getattr(rec, "logit_std", []) + [logits.std().item()]
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                          *args, **kwargs)


def install_recorder(unet, recorder):
    n = 0
    for name, mod in unet.named_modules():
        if name.startswith("up_blocks.") and name.endswith(".attn2"):
            mod.set_processor(RecordingProcessor(recorder, name, mod.processor))
            n += 1
    assert n > 0


class SKP:
    def __init__(self, unet, vae, emb, alpha_bar, res=R):
        self.unet, self.vae, self.emb = unet, vae, emb
        self.alpha_bar = alpha_bar
        self.rec = Recorder(latent_side=S // 8, res=res, num_layers=NUM_LAYERS)
        install_recorder(unet, self.rec)

    @torch.no_grad()
    def latent(self, img):
        return self.vae.encode((2.0 * img - 1.0)[None]).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def maps_from_latent(self, noisy, t=T):
        self.rec.reset()
        self.unet(noisy, torch.tensor([t], dtype=torch.int64), encoder_hidden_states=self.emb[None],
                  added_cond_kwargs=self.added_cond(noisy))
        assert len(self.rec.maps) == NUM_LAYERS, self.rec.all_calls
        return torch.stack(self.rec.maps).mean(dim=0)  # [N, R, R]

    def added_cond(self, latent):
        """SDXL's added conditioning as the Rust side feeds it: a zero pooled text embedding
        and the time ids (H, W, 0, 0, H, W) of the input in pixels. None for SD 1.x / 2.x."""
        if self.unet.config.addition_embed_type != "text_time":
            return None
        h, w = latent.shape[2] * 8, latent.shape[3] * 8
        pooled = (self.unet.config.projection_class_embeddings_input_dim
                  - 6 * self.unet.config.addition_time_embed_dim)
        return {"text_embeds": torch.zeros(1, pooled),
                "time_ids": torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)}

    def noisy(self, lat, noise):
        a = self.alpha_bar
        if noise is None:
            return math.sqrt(a) * lat
        return math.sqrt(a) * lat + math.sqrt(1.0 - a) * noise

    def maps(self, img, noise=None):
        return self.maps_from_latent(self.noisy(self.latent(img), noise))


def argmax_keypoints(up):
    """up: [K, H, W] -> (xy [K,2], peak [K], gap [K] = peak - 2nd largest value)."""
    k, h, w = up.shape
    flat = up.reshape(k, -1)
    idx = flat.argmax(dim=1)
    rows, cols = idx // w, idx % w
    xy = torch.stack([(cols.double() + 0.5) / w, (rows.double() + 0.5) / h], dim=1).to(torch.float32)
    peak = flat.gather(1, idx[:, None])[:, 0]
    top2 = flat.topk(2, dim=1).values
    return xy, peak, top2[:, 0] - top2[:, 1], rows, cols


def argmax_ambiguity_px(up, rows, cols, rel=1e-4):
    """For each map: the largest distance (pixels) from the argmax to any pixel whose value is
    within rel*peak of the peak, i.e. how far the argmax may move under tiny float noise."""
    k, h, w = up.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = []
    for i in range(k):
        peak = up[i, rows[i], cols[i]]
        m = up[i] >= peak - rel * peak
        d = torch.sqrt(((yy - rows[i]) ** 2 + (xx - cols[i]) ** 2).double())[m]
        out.append(d.max().item())
    return torch.tensor(out, dtype=torch.float32)


def upsample_bilinear(maps, size):
    return F.interpolate(maps[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def make_model_goldens(name, spec):
    R = spec.get("map_res", globals()["R"])
    print(f"\n=== {name} ===")
    d = os.path.join(DATA, name)
    os.makedirs(d, exist_ok=True)
    unet, vae, files = build_and_save_models(name, spec)
    ctx = spec["unet"]["cross_attention_dim"]

    # tokens
    g = torch.Generator().manual_seed(spec["seed"] + 2)
    emb = torch.randn(N_TOK, ctx, generator=g)
    indices = torch.randperm(N_TOK, generator=g)[:K].to(torch.int64)
    assert len(set(indices.tolist())) == K
    tok_meta = {"input_size": str(S), "map_res": str(R), "num_layers": str(NUM_LAYERS),
                "timestep": str(T)}
    save_st(os.path.join(d, "tokens.safetensors"), {"embeddings": emb, "indices": indices},
            metadata=tok_meta)

    # pictures
    arr = synthetic_picture(S, S, 0 if name == "tiny-sd1" else 1)
    write_png(os.path.join(d, "image.png"), arr)
    write_png(os.path.join(d, "image_wide.png"), synthetic_picture(160, 120, 1 if name == "tiny-sd1" else 0))
    image = png_to_tensor(arr)

    sched = make_scheduler()
    alpha_bar = sched.alphas_cumprod[T].item()  # float32 value, as a Python float (exact)
    print(f"  alpha_bar[{T}] = {alpha_bar!r} (diffusers, float32-computed)")

    skp = SKP(unet, vae, emb, alpha_bar, res=R)
    lat = skp.latent(image)
    assert list(lat.shape) == [1, 4, S // 8, S // 8]
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(spec["seed"] + 3))
    noisy = skp.noisy(lat, noise)

    maps_noise = skp.maps_from_latent(noisy)
    maps_zero = skp.maps_from_latent(skp.noisy(lat, None))
    sides = list(skp.rec.sides)
    names = list(skp.rec.names)
    layer_inputs = list(skp.rec.inputs)
    # per-layer maps (zero-noise pass) of the first 2 selected tokens: [4, 2, R, R]
    layer_maps_sel = torch.stack([m[indices[:2]] for m in skp.rec.maps])
    print("  up-path attn2 calls:", skp.rec.all_calls)
    print("  recorded:", list(zip(names, sides)))
    print("  logit std per recorded layer:", ["%.3f" % v for v in skp.rec.logit_std])
    if "layers" in spec:
        assert sides == [4, 4, 4, 4], sides
        assert names == spec["layers"], names
    else:
        assert sides == [4, 4, 8, 8], sides
        assert names == [
            "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
            "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
            "up_blocks.2.attentions.0.transformer_blocks.0.attn2",
            "up_blocks.2.attentions.1.transformer_blocks.0.attn2",
        ], names

    # The maps at the reference's noise_level -2 (t = 20), zero noise: another timestep's
    # embedding and latent scale (the selected tokens' maps are kept).
    t20 = int(sched.timesteps[-2].item())
    assert t20 == 20, t20
    a20 = sched.alphas_cumprod[t20].item()
    maps_zero_t20 = skp.maps_from_latent(math.sqrt(a20) * lat, t=t20)
    assert (maps_zero_t20 - maps_zero).abs().max().item() > 1e-6

    for m in (maps_noise, maps_zero):
        assert list(m.shape) == [N_TOK, R, R]
        tot = m.sum(dim=0)
        assert torch.allclose(tot, torch.ones_like(tot), atol=1e-5), (tot.min(), tot.max())
        # not uniform: clearly varies across tokens and pixels
        assert m.max().item() > 3.0 / N_TOK, m.max()
        per_tok_range = m.amax(dim=(1, 2)) - m.amin(dim=(1, 2))
        assert per_tok_range.median().item() > 0.2 / N_TOK, per_tok_range.median()
    assert (maps_noise - maps_zero).abs().max().item() > 1e-6

    # keypoints (zero noise), method.md section 4 without TTA
    up = upsample_bilinear(maps_zero[indices], S)
    kp_zero, sc_zero, gap_zero, rows, cols = argmax_keypoints(up)
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 1, "keypoints all identical"
    print("  keypoints_zero (x,y):", [tuple(round(v, 4) for v in p) for p in kp_zero.tolist()])
    amb_zero = argmax_ambiguity_px(up, rows, cols)
    print("  argmax gap (peak - 2nd value):", ["%.2e" % v for v in gap_zero.tolist()])
    print("  argmax ambiguity radius (px @128, rel 1e-4):", ["%.1f" % v for v in amb_zero.tolist()])

    # TTA with fixed affine warps (zero noise)
    tta_params = [(12, 0.85, 0.1, -0.15), (-8, 0.95, -0.2, 0.05), (3, 0.8, 0.05, 0.2)]
    thetas = torch.stack([affine_theta(*p) for p in tta_params])
    inv_thetas = torch.stack([inverse_theta(th) for th in thetas])
    acc = torch.zeros(K, S, S)
    cnt = torch.zeros(1, S, S)
    ones = torch.ones(1, 1, S, S)
    for th, inv in zip(thetas, inv_thetas):
        warped = warp(image[None], th)[0]
        mw = skp.maps(warped, None)
        upw = upsample_bilinear(mw[indices], S)
        acc += warp(upw[None], inv)[0]
        cnt += warp(ones, inv)[0]
    tta = torch.where(cnt > 0, acc / torch.where(cnt > 0, cnt, torch.ones_like(cnt)), torch.zeros_like(acc))
    kp_tta, sc_tta, gap_tta, trows, tcols = argmax_keypoints(tta)
    assert len(set(zip(trows.tolist(), tcols.tolist()))) > 1, "tta keypoints all identical"
    print("  tta_keypoints (x,y):", [tuple(round(v, 4) for v in p) for p in kp_tta.tolist()])
    amb_tta = argmax_ambiguity_px(tta, trows, tcols)
    print("  tta argmax gap:", ["%.2e" % v for v in gap_tta.tolist()])
    print("  tta argmax ambiguity radius (px @128, rel 1e-4):", ["%.1f" % v for v in amb_tta.tolist()])

    golden = {
        "image": image,
        "latent": lat,
        "noise": noise,
        "noisy_latent": noisy,
        "maps_noise": maps_noise,
        "maps_zero": maps_zero,
        "maps_zero_t20_sel": maps_zero_t20[indices],
        "layer_sides": torch.tensor(sides, dtype=torch.int64),
        "keypoints_zero": kp_zero,
        "scores_zero": sc_zero,
        "tta_thetas": thetas,
        "tta_inv_thetas": inv_thetas,
        "tta_maps": tta,
        "tta_count": cnt[0],
        "tta_keypoints": kp_tta,
        "tta_scores": sc_tta,
        "indices": indices,
        "input_size": torch.tensor([S], dtype=torch.int64),
        "map_res": torch.tensor([R], dtype=torch.int64),
        "timestep": torch.tensor([T], dtype=torch.int64),
        "alpha_bar": torch.tensor([alpha_bar], dtype=torch.float64),
        # debugging aids for the Rust side (zero-noise pass)
        "layer_maps_zero_sel2": layer_maps_sel,
        "keypoints_zero_ambiguity_px": amb_zero,
        "tta_ambiguity_px": amb_tta,
    }
    for i, x in enumerate(layer_inputs):
        golden[f"layer_input_zero_{i}"] = x
    save_st(os.path.join(d, "golden.safetensors"), golden,
            metadata={"input_size": str(S), "map_res": str(R), "num_layers": str(NUM_LAYERS),
                      "timestep": str(T), "layers": ",".join(names)})

    if name == "tiny-sd1":
        make_train_golden(d, skp, image, ctx, spec["seed"] + 4)
        make_select_golden(d, skp, image, ctx, spec["seed"] + 100)

    # key lists
    lines = [f"# {name}: generated by tests/reference/make_goldens.py",
             f"# torch {torch.__version__}, diffusers {diffusers.__version__}"]
    for label, p in [("unet", files["unet"]), ("vae", files["vae"]),
                     ("tokens", os.path.join(d, "tokens.safetensors")),
                     ("golden", os.path.join(d, "golden.safetensors")),
                     ("train golden", os.path.join(d, "train_golden.safetensors")),
                     ("select golden", os.path.join(d, "select_golden.safetensors"))]:
        if not os.path.exists(p):
            continue
        lines.append(f"\n## {label}: {os.path.relpath(p, ROOT)}")
        lines += key_lines(p)
    kp = os.path.join(REF, f"keys-{name}.txt")
    with open(kp, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(kp, ROOT)}")


# --------------------------------------------------------------------------------------------
# D) one training step (method.md section 3), independently of the Rust code


def topk_gaussian(maps, num, sigma, eps=1e-5):
    """The reference's Gaussian-KL candidates: KL(target || softmax(map + eps)), target a
    Gaussian at the argmax pixel centre plus eps, normalised. Returns (order[:num], kl)."""
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    idx = flat.argmax(dim=1)
    c = torch.arange(h, dtype=torch.float32) + 0.5
    py = ((idx // w).float() + 0.5)[:, None, None]
    px = ((idx % w).float() + 0.5)[:, None, None]
    d2 = (c[None, :, None] - py) ** 2 + (c[None, None, :] - px) ** 2
    tgt = torch.exp(-d2 / (2.0 * sigma ** 2)).reshape(n, -1) + eps
    tgt = tgt / tgt.sum(dim=-1, keepdim=True)
    sm = torch.softmax(flat + eps, dim=-1)
    kl = (tgt * (tgt.log() - sm.log())).sum(dim=-1)
    return torch.argsort(kl, stable=True)[:num], kl


def fps(maps, k, cands):
    """The reference's furthest point sampling on the maps' argmax locations (normalised,
    pixel centres), strict '>' so the first of equals wins. Also returns the smallest margin
    (in squared pixels) by which any choice beat its runner-up, to rule out ties."""
    n, h, w = maps.shape
    idx = maps.reshape(n, -1).argmax(dim=1)
    loc = torch.stack([(idx // w).float() + 0.5, (idx % w).float() + 0.5], dim=1) / h
    ipx = torch.stack([idx // w, idx % w], dim=1)
    c = [int(v) for v in cands]
    d2 = lambda a, b: int(((ipx[a] - ipx[b]) ** 2).sum())
    best, pair, margins = -1.0, None, []
    pairs = []
    for i in range(len(c)):
        for j in range(i + 1, len(c)):
            d = torch.sqrt(((loc[c[i]] - loc[c[j]]) ** 2).sum()).item()
            pairs.append(d2(c[i], c[j]))
            if d > best:
                best, pair = d, (c[i], c[j])
    pairs.sort(reverse=True)
    margins.append(pairs[0] - pairs[1])
    sel = [pair[0], pair[1]]
    for _ in range(k - 2):
        best, nxt, scores = -1.0, None, []
        for t in c:
            if t in sel:
                continue
            d = min(torch.sqrt(((loc[t] - loc[s]) ** 2).sum()).item() for s in sel)
            scores.append(min(d2(t, s) for s in sel))
            if d > best:
                best, nxt = d, t
        scores.sort(reverse=True)
        margins.append(scores[0] - scores[1] if len(scores) > 1 else 99)
        sel.append(nxt)
    return sel, min(margins)


def make_train_golden(d, skp, image, ctx, seed):
    # The first seed whose ranking and FPS have no near-ties (the two implementations round
    # differently; ties are decided by rounding noise, not by the method).
    for s in range(seed, seed + 50):
        if train_step(d, skp, image, ctx, s):
            return
    raise AssertionError("no seed without near-ties")


def train_step(d, skp, image, ctx, seed):
    n_tok, n_cand, k, sigma = 64, 25, 10, 2.0
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n_tok, ctx, generator=g)
    theta = affine_theta(10.0, 0.9, 0.1, -0.15)
    # The reference inverts its float32 3x3 in float32.
    m3 = torch.cat([theta, torch.tensor([[0.0, 0.0, 1.0]])], dim=0)
    inv = torch.inverse(m3)[:2]
    warped = warp(image[None], theta)[0]
    lat = torch.cat([skp.latent(image), skp.latent(warped)], dim=0)
    noise = torch.randn(lat.shape, generator=g)
    noisy = skp.noisy(lat, noise)
    for p in skp.unet.parameters():
        p.requires_grad_(False)
    e = emb.clone().requires_grad_(True)

    def maps_of(z):
        skp.rec.reset()
        skp.unet(z[None], torch.tensor([T], dtype=torch.int64), encoder_hidden_states=e[None])
        assert len(skp.rec.maps) == NUM_LAYERS
        return torch.stack(skp.rec.maps).mean(dim=0)  # [N, R, R]

    m_all, mw_all = maps_of(noisy[0]), maps_of(noisy[1])
    cands, kl = topk_gaussian(m_all.detach(), n_cand, sigma)
    ks = kl.sort().values
    kl_gap = (ks[n_cand] - ks[n_cand - 1]).item()
    kl_min_gap = (ks[1:n_cand + 1] - ks[:n_cand]).min().item()
    sel, margin = fps(mw_all.detach(), k, cands)
    print(f"  train seed {seed}: KL {ks[0].item():.5f}..{ks[n_cand].item():.5f}, gap at the cut "
          f"{kl_gap:.3e}, smallest among the first {n_cand + 1} {kl_min_gap:.3e}; FPS margin "
          f"{margin} px^2")
    if margin <= 0 or kl_min_gap < 2e-5:
        return False
    print(f"  train: candidates {cands.tolist()}")
    print(f"  train: selected {sel}")
    m, mw = m_all[sel], mw_all[sel]
    r = m.shape[-1]
    idx = m.detach().reshape(k, -1).argmax(dim=1)
    tgt = torch.stack([gaussian_peak1(r, int(i) // r, int(i) % r, sigma) for i in idx])
    sharp = F.mse_loss(m, tgt)
    back = warp(mw[None], inv)[0]
    equi = F.mse_loss(m, back)
    loss = 1000.0 * equi + 100.0 * sharp
    loss.backward()
    grad = e.grad.detach().clone()
    print(f"  train: sharpening {sharp.item():.6e}, equivariance {equi.item():.6e}, "
          f"loss {loss.item():.6e}, |grad| {grad.norm().item():.4e}")
    save_st(os.path.join(d, "train_golden.safetensors"), {
        "embeddings": emb,
        "theta": theta,
        "inv_theta": inv,
        "latents": lat,
        "noise": noise,
        "candidates": cands.to(torch.int64),
        "selected": torch.tensor(sel, dtype=torch.int64),
        "sharpening": torch.tensor([sharp.item()], dtype=torch.float64),
        "equivariance": torch.tensor([equi.item()], dtype=torch.float64),
        "loss": torch.tensor([loss.item()], dtype=torch.float64),
        "grad": grad,
    }, metadata={"num_candidates": str(n_cand), "num_keypoints": str(k), "sigma": str(sigma),
                 "timestep": str(T), "map_res": str(R), "input_size": str(S),
                 "seed": str(seed)})
    return True


# --------------------------------------------------------------------------------------------
# D2) the other top-k strategies and num_subjects > 1 (the reference's --top_k_strategy
#     entropy / consistent, --num_subjects), one training step each, independently of the
#     Rust code


def entropy_rank(maps, num):
    """Candidates by the entropy of each map's softmax over its pixels, lowest first, with the
    probabilities clamped to [eps, 1 - eps] inside the log as torch's Categorical does. In
    float64: the entropies of attention maps lie within ~1e-3 of ln(R^2), a few float32 ulps
    apart, so a float32 order would be decided by rounding."""
    n = maps.shape[0]
    eps = torch.finfo(torch.float32).eps
    probs = torch.softmax(maps.reshape(n, -1).double(), dim=-1)
    ent = -(probs * probs.clamp(eps, 1 - eps).log()).sum(dim=-1)
    # The same quantity as torch computes it (float32).
    ent32 = torch.distributions.Categorical(probs=probs.float()).entropy()
    assert (ent32.double() - ent).abs().max().item() < 1e-5
    return torch.argsort(ent, stable=True)[:num], ent


def subject_peaks(maps, num):
    """Flat peak pixels [n, num]: the argmax, then every pixel whose integer (row, col) lies
    within 0.05 * side of that peak's centre (row + 0.5, col + 0.5) multiplied by 0, repeated.
    Also the smallest relative gap between a chosen peak and the runner-up of its masked map."""
    n, h, w = maps.shape
    m = maps.clone()
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    out, gap = [], float("inf")
    for _ in range(num):
        flat = m.reshape(n, -1)
        idx = flat.argmax(dim=1)
        top2 = flat.topk(2, dim=1).values
        gap = min(gap, ((top2[:, 0] - top2[:, 1]) / top2[:, 0]).min().item())
        out.append(idx)
        pr = ((idx // w).float() + 0.5)[:, None, None]
        pc = ((idx % w).float() + 0.5)[:, None, None]
        d2 = (rows[None] - pr) ** 2 + (cols[None] - pc) ** 2
        m = m * (d2 > (0.05 * h) ** 2).float()
    return torch.stack(out, dim=1), gap


def peaks_target(res, peaks, sigma):
    """Mean of the peak-1 Gaussians at the flat pixels `peaks`."""
    return torch.stack([gaussian_peak1(res, int(p) // res, int(p) % res, sigma)
                        for p in peaks]).mean(dim=0)


def gaussian_rank_subjects(maps, num, sigma, subjects, eps=1e-5):
    n, h, w = maps.shape
    pk, gap = subject_peaks(maps, subjects)
    tgt = torch.stack([peaks_target(h, pk[i], sigma) for i in range(n)]).reshape(n, -1) + eps
    tgt = tgt / tgt.sum(dim=-1, keepdim=True)
    sm = torch.softmax(maps.reshape(n, -1) + eps, dim=-1)
    kl = (tgt * (tgt.log() - sm.log())).sum(dim=-1)
    return torch.argsort(kl, stable=True)[:num], kl, gap


def strategy_step(skp, image, ctx, seed, strategy, subjects):
    """One training step with `strategy` and `subjects`; None when near-ties would let
    rounding decide the selection."""
    n_tok, n_cand, k, sigma = 64, 25, 10, 2.0
    g = torch.Generator().manual_seed(seed)
    # Twice the initial scale: sharper maps, as trained tokens give.
    emb = 2.0 * torch.randn(n_tok, ctx, generator=g)
    theta = affine_theta(-7.0, 0.85, -0.1, 0.2)
    m3 = torch.cat([theta, torch.tensor([[0.0, 0.0, 1.0]])], dim=0)
    inv = torch.inverse(m3)[:2]
    warped = warp(image[None], theta)[0]
    lat = torch.cat([skp.latent(image), skp.latent(warped)], dim=0)
    noise = torch.randn(lat.shape, generator=g)
    noisy = skp.noisy(lat, noise)
    e = emb.clone().requires_grad_(True)

    def maps_of(z):
        skp.rec.reset()
        skp.unet(z[None], torch.tensor([T], dtype=torch.int64), encoder_hidden_states=e[None])
        return torch.stack(skp.rec.maps).mean(dim=0)

    m_all, mw_all = maps_of(noisy[0]), maps_of(noisy[1])
    score, peak_gap = None, 1.0
    if strategy == "entropy":
        cands, score = entropy_rank(m_all.detach(), n_cand)
        min_gap = 1e-8
    elif strategy == "consistent":
        cands = torch.arange(n_cand)
    else:
        cands, score, peak_gap = gaussian_rank_subjects(m_all.detach(), n_cand, sigma, subjects)
        min_gap = 2e-5
    if score is not None:
        ss = score.sort().values
        if (ss[1:n_cand + 1] - ss[:n_cand]).min().item() < min_gap:
            return None
    if peak_gap < 1e-5:
        return None
    sel, margin = fps(mw_all.detach(), k, cands)
    if margin <= 0:
        return None
    m, mw = m_all[sel], mw_all[sel]
    r = m.shape[-1]
    pk, _ = subject_peaks(m.detach(), subjects)
    tgt = torch.stack([peaks_target(r, pk[i], sigma) for i in range(k)])
    sharp = F.mse_loss(m, tgt)
    equi = F.mse_loss(m, warp(mw[None], inv)[0])
    loss = 1000.0 * equi + 100.0 * sharp
    loss.backward()
    print(f"  {strategy} x{subjects} (seed {seed}): candidates {cands.tolist()}, selected {sel}, "
          f"sharpening {sharp.item():.6e}, equivariance {equi.item():.6e}")
    out = {"embeddings": emb, "theta": theta, "latents": lat, "noise": noise,
           "candidates": cands.to(torch.int64), "selected": torch.tensor(sel, dtype=torch.int64),
           "peaks": pk.to(torch.int64), "targets": tgt,
           "sharpening": torch.tensor([sharp.item()], dtype=torch.float64),
           "equivariance": torch.tensor([equi.item()], dtype=torch.float64),
           "loss": torch.tensor([loss.item()], dtype=torch.float64),
           "grad": e.grad.detach().clone()}
    if score is not None:
        out["scores"] = score.to(torch.float64)
    return out


def make_select_golden(d, skp, image, ctx, seed):
    for p in skp.unet.parameters():
        p.requires_grad_(False)
    out, meta = {}, {}
    for case, strategy, subjects in [("entropy", "entropy", 1), ("consistent", "consistent", 1),
                                     ("subjects3", "gaussian", 3)]:
        for s in range(seed, seed + 50):
            got = strategy_step(skp, image, ctx, s, strategy, subjects)
            if got is not None:
                break
        else:
            raise AssertionError(f"{case}: no seed without near-ties")
        if case != "subjects3":
            del got["targets"]  # single Gaussians: the train golden covers them
        out.update({f"{case}_{k}": v for k, v in got.items()})
        meta[f"{case}_seed"] = str(s)
    meta.update({"num_candidates": "25", "num_keypoints": "10", "sigma": "2.0",
                 "timestep": str(T), "map_res": str(R), "input_size": str(S)})
    save_st(os.path.join(d, "select_golden.safetensors"), out, metadata=meta)


# --------------------------------------------------------------------------------------------
# E) the reference's metrics, regressors and files (its eval.py / keypoint_regressor.py /
#    main.py), re-implemented here from their definitions


def swap_perm(pairs, l):
    perm = list(range(l))
    for a, b in pairs:
        perm[a] = b
        perm[b] = a
    return perm


H36M_PAIRS = [(1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (17, 25), (18, 26), (19, 27), (20, 28),
              (21, 28), (22, 30), (23, 31)]


def ref_metrics(pred, raw, vis, wh, eyes=(0, 1), pck_px=6.0):
    """pred [n, L, 2] normalised, raw [n, L, 2] pixels as labelled, vis [n, L] bool,
    wh [n, 2]. The reference's per-image values, then their means (its units)."""
    gt = raw / wh[:, None, :]
    out = {"taichi": [], "inter_ocular": [], "visible": [], "pck": []}
    for p, g, v in zip(pred, gt, vis):
        v = v.double()
        l2_256 = (p * 256 - g * 256).norm(dim=-1)
        l2 = (p - g).norm(dim=-1)
        out["taichi"].append((l2_256 * v).sum())
        eye = torch.sqrt(torch.sum((g[eyes[0]] - g[eyes[1]]) ** 2, dim=-1))
        out["inter_ocular"].append(torch.mean(l2 / eye))
        out["visible"].append((l2 * v).sum() / v.sum())
        out["pck"].append((l2_256 < pck_px).double().mean())
    return {k: torch.stack(v).mean().item() for k, v in out.items()}


def ref_h36m_metric(pred, raw, wh, perm):
    gt = raw / wh[:, None, :]
    vals = []
    for p, g in zip(pred, gt):
        a = (p - g).norm(dim=-1).mean()
        b = (p[perm] - g).norm(dim=-1).mean()
        vals.append(torch.minimum(a, b) * 128)
    return torch.stack(vals).mean().item()


def ref_h36m_regressor(x, y, perm):
    """return_regressor_human36m: (X^T X)^-1 X^T, refit while > 10 rows prefer the swap."""
    x, y = x - 0.5, (y - 0.5).clone()
    xtxxt = torch.linalg.inv(x.T @ x) @ x.T
    fits = 0
    while True:
        w = xtxxt @ y
        fits += 1
        pred = x @ w
        n = x.shape[0]
        dist = (pred - y).reshape(n, -1, 2).norm(dim=2).mean(dim=1)
        sw = y.reshape(n, -1, 2)[:, perm].reshape(n, -1)
        sdist = (pred - sw).reshape(n, -1, 2).norm(dim=2).mean(dim=1)
        swap = dist > sdist
        if swap.sum() > 10:
            y[swap] = sw[swap]
        else:
            return w, fits


def make_fidelity_goldens():
    print("\n=== fidelity (metrics, regressors, reference files) ===")
    g = torch.Generator().manual_seed(77)
    out = {}
    # Metrics on fixed predictions: 9 images, 5 landmarks, varied sizes, 2 hidden landmarks.
    n, l = 9, 5
    wh = torch.stack([100 + 200 * torch.rand(n, generator=g, dtype=torch.float64),
                      80 + 180 * torch.rand(n, generator=g, dtype=torch.float64)], dim=1).round()
    gtn = 0.1 + 0.8 * torch.rand(n, l, 2, generator=g, dtype=torch.float64)
    raw = gtn * wh[:, None, :]
    vis = torch.ones(n, l, dtype=torch.bool)
    vis[2, 3] = vis[5, 0] = False
    raw[2, 3] = raw[5, 0] = -1.0  # hidden: written as -1, used as-is by all-landmark metrics
    pred = (gtn + 0.03 * torch.randn(n, l, 2, generator=g, dtype=torch.float64)).clamp(0, 1)
    l2_256 = (pred * 256 - raw / wh[:, None, :] * 256).norm(dim=-1)
    assert (l2_256 - 6.0).abs().min() > 1e-6
    out.update({"metric_pred": pred, "metric_raw": raw, "metric_vis_mask": vis.to(torch.int64),
                "metric_wh": wh})
    for k, v in ref_metrics(pred, raw, vis, wh).items():
        out[f"metric_{k}"] = torch.tensor([v], dtype=torch.float64)
        print(f"  metric {k}: {v!r} (reference units)")
    # Human3.6M: 32 landmarks and the reference's swap list.
    n, l = 6, 32
    perm = swap_perm(H36M_PAIRS, l)
    wh = torch.full((n, 2), 128.0, dtype=torch.float64)
    wh[:, 0] = torch.tensor([128.0, 96, 160, 128, 200, 64])
    gtn = 0.1 + 0.8 * torch.rand(n, l, 2, generator=g, dtype=torch.float64)
    pred = gtn + 0.02 * torch.randn(n, l, 2, generator=g, dtype=torch.float64)
    pred[1] = gtn[1][perm]  # predicted mirrored: the swap wins
    pred[4] = gtn[4][perm] + 0.01
    out.update({"h36m_pred": pred, "h36m_raw": gtn * wh[:, None, :], "h36m_wh": wh})
    v = ref_h36m_metric(pred, gtn * wh[:, None, :], wh, perm)
    out["metric_h36m"] = torch.tensor([v], dtype=torch.float64)
    print(f"  metric orientation_invariant: {v!r}")

    # Regressors. X: normalised keypoints (ours: x, y per keypoint); Y: normalised labels.
    n, k, l = 40, 4, 5
    x = torch.rand(n, 2 * k, generator=g, dtype=torch.float64)
    w_true = 0.5 * torch.randn(2 * k, 2 * l, generator=g, dtype=torch.float64)
    y = 0.5 + (x - 0.5) @ w_true + 0.01 * torch.randn(n, 2 * l, generator=g, dtype=torch.float64)
    vis = torch.rand(n, l, generator=g) > 0.2
    y = y.reshape(n, l, 2)
    y[~vis] = -1.0  # as labelled: hidden = -1
    y = y.reshape(n, 2 * l)
    xc, yc = (x - 0.5).numpy(), (y - 0.5).numpy()
    out["reg_x"], out["reg_y"], out["reg_visible"] = x, y, vis.to(torch.int64)
    out["reg_plain_w"] = torch.from_numpy(np.linalg.pinv(xc.T @ xc) @ xc.T @ yc)
    w_vis = np.zeros((2 * k, 2 * l))
    v2 = vis.repeat_interleave(2, dim=1).numpy()
    for j in range(2 * l):
        rows = np.where(v2[:, j])[0]
        xf = xc[rows]
        w_vis[:, j] = np.linalg.pinv(xf.T @ xf) @ xf.T @ yc[rows, j]
    out["reg_visible_w"] = torch.from_numpy(w_vis)
    # Human3.6M's swap-refit: 40% of the rows labelled mirrored.
    n, k, l = 120, 6, 32
    perm = swap_perm(H36M_PAIRS, l)
    x = torch.rand(n, 2 * k, generator=g, dtype=torch.float64)
    w_true = 0.4 * torch.randn(2 * k, 2 * l, generator=g, dtype=torch.float64)
    y = (0.5 + (x - 0.5) @ w_true).reshape(n, l, 2)
    flip = torch.rand(n, generator=g) < 0.4
    y[flip] = y[flip][:, perm]
    y = y.reshape(n, 2 * l) + 0.01 * torch.randn(n, 2 * l, generator=g, dtype=torch.float64)
    w, fits = ref_h36m_regressor(x, y, perm)
    print(f"  human3.6m regressor: {fits} fits, {int(flip.sum())} rows labelled mirrored")
    assert fits >= 2
    out.update({"h36m_x": x, "h36m_y": y, "h36m_w": w,
                "h36m_fits": torch.tensor([fits], dtype=torch.int64)})

    # The reference's files, written by torch.save as its main.py does.
    rd = os.path.join(DATA, "reference-tokens")
    os.makedirs(rd, exist_ok=True)
    tok = load_file(os.path.join(DATA, "tiny-sd1", "tokens.safetensors"))
    torch.save(tok["embeddings"][None].clone(), os.path.join(rd, "embedding.pt"))  # [1, N, D]
    # Like `indices[:top_k]`: a view on a longer storage.
    longer = torch.cat([tok["indices"], torch.tensor([63, 62, 61], dtype=torch.int64)])
    torch.save(longer[: tok["indices"].numel()], os.path.join(rd, "indices.pt"))
    k, l = tok["indices"].numel(), 5
    reg = torch.randn(2 * k, 2 * l, generator=g).to(torch.float32)
    torch.save(reg, os.path.join(rd, "regressor.pt"))
    torch.save(torch.arange(10, dtype=torch.float32)[3:], os.path.join(rd, "offset.pt"))
    out["ref_regressor"] = reg
    for f in sorted(os.listdir(rd)):
        print(f"wrote {os.path.relpath(os.path.join(rd, f), ROOT)} "
              f"({file_size(os.path.join(rd, f))} bytes)")
    save_st(os.path.join(DATA, "fidelity_golden.safetensors"), out)


# --------------------------------------------------------------------------------------------
# F) each family's tiny model in every form users have weights in: diffusers' .bin and
#    sharded saves, and single files in the original Stable Diffusion layout (our own
#    conversion, checked by reading it back with diffusers' from_single_file)


FORMS = os.path.join(DATA, "forms")

UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
               ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
               ("conv_shortcut", "skip_connection")]
VAE_RESNET = [("conv_shortcut", "nin_shortcut")]
VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                 ("to_out.0", "proj_out")]


def unet_prefixes(cfg):
    """(diffusers module prefix, original prefix, inner renames) of a UNet config."""
    n = len(cfg.block_out_channels)
    layers = cfg.layers_per_block
    assert isinstance(layers, int), layers
    per = layers + 1
    t = [("conv_in", "input_blocks.0.0", []),
         ("time_embedding.linear_1", "time_embed.0", []),
         ("time_embedding.linear_2", "time_embed.2", []),
         ("add_embedding.linear_1", "label_emb.0.0", []),
         ("add_embedding.linear_2", "label_emb.0.2", []),
         ("mid_block.resnets.0", "middle_block.0", UNET_RESNET),
         ("mid_block.attentions.0", "middle_block.1", []),
         ("mid_block.resnets.1", "middle_block.2", UNET_RESNET),
         ("conv_norm_out", "out.0", []),
         ("conv_out", "out.2", [])]
    for i in range(n):
        for j in range(layers):
            k = 1 + i * per + j
            t.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0", UNET_RESNET))
            t.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1", []))
        if i + 1 < n:
            t.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{1 + i * per + layers}.0.op", []))
        for j in range(per):
            t.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{i * per + j}.0", UNET_RESNET))
            t.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{i * per + j}.1", []))
        if i + 1 < n:
            at = 2 if cfg.up_block_types[i].startswith("CrossAttn") else 1
            t.append((f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{i * per + layers}.{at}.conv", []))
    return t


def vae_prefixes(cfg):
    n = len(cfg.block_out_channels)
    layers = cfg.layers_per_block
    t = []
    for part in ("encoder", "decoder"):
        t += [(f"{part}.conv_in", f"{part}.conv_in", []),
              (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET),
              (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION),
              (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET),
              (f"{part}.conv_norm_out", f"{part}.norm_out", []),
              (f"{part}.conv_out", f"{part}.conv_out", [])]
    for i in range(n):
        for j in range(layers):
            t.append((f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", VAE_RESNET))
        if i + 1 < n:
            t.append((f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", []))
        r = n - 1 - i
        for j in range(layers + 1):
            t.append((f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{r}.block.{j}", VAE_RESNET))
        if i + 1 < n:
            t.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{r}.upsample.conv", []))
    t += [("quant_conv", "quant_conv", []), ("post_quant_conv", "post_quant_conv", [])]
    return t


def to_original_name(table, key):
    """Our (diffusers) key -> the original layout's, through the longest matching prefix."""
    module, param = key.rsplit(".", 1)
    best = None
    for ours, theirs, inner in table:
        if module == ours or module.startswith(ours + "."):
            if best is None or len(ours) > len(best[0]):
                best = (ours, theirs, inner)
    assert best is not None, key
    ours, theirs, inner = best
    rest = module[len(ours):].lstrip(".")
    rest = dict(inner).get(rest, rest)
    return f"{theirs}.{rest}.{param}" if rest else f"{theirs}.{param}"


def original_state_dict(unet, vae):
    """One state dict in the original layout: model.diffusion_model.* and first_stage_model.*
    (VAE attention projections as 1x1 convolutions), plus the schedule's betas as real files
    have them."""
    out = {}
    ut, vt = unet_prefixes(unet.config), vae_prefixes(vae.config)
    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + to_original_name(ut, k)] = v.clone()
    for k, v in vae.state_dict().items():
        name = to_original_name(vt, k)
        if ".mid.attn_1." in name and name.endswith(".weight") and v.dim() == 2:
            v = v[:, :, None, None]
        out["first_stage_model." + name] = v.clone()
    assert len(out) == len(unet.state_dict()) + len(vae.state_dict())
    out["betas"] = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return out


def assert_same(a, b, what):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), (what, set(sa) ^ set(sb))
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), (what, k)


def load_family(name, fp16):
    d = os.path.join(DATA, name)
    kw = dict(variant="fp16", torch_dtype=torch.float16) if fp16 else dict(torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), **kw)
    vae = AutoencoderKL.from_pretrained(os.path.join(d, "vae"), **kw)
    return d, unet, vae


def make_forms(name, spec, commit_torch_files):
    """Writes tests/data/forms/<name>/: the sharded save's index (the Rust test cuts the
    committed weights into the shards it names), the original-layout names of every UNet
    tensor, and, for the small SDXL model, the files only PyTorch writes: diffusers' .bin
    save and the .ckpt single file. Every single file (.safetensors and .ckpt, each family)
    is read back by diffusers' from_single_file to the same weights."""
    import tempfile
    print(f"\n=== forms of {name} ===")
    fp16 = spec["fp16"]
    d, unet, vae = load_family(name, fp16)
    out = os.path.join(FORMS, name)
    os.makedirs(out, exist_ok=True)
    variant = dict(variant="fp16") if fp16 else {}
    with tempfile.TemporaryDirectory() as tmp:
        # sharded (diffusers' own save), read back by diffusers
        sh = os.path.join(tmp, "sharded")
        unet.save_pretrained(sh, max_shard_size="300KB", safe_serialization=True, **variant)
        index_name = [f for f in os.listdir(sh) if ".index" in f and f.endswith(".json")]
        assert len(index_name) == 1, os.listdir(sh)
        index = os.path.join(sh, index_name[0])
        shards = {v for v in json.load(open(index))["weight_map"].values()}
        assert len(shards) > 2, shards
        assert_same(unet, UNet2DConditionModel.from_pretrained(sh, torch_dtype=unet.dtype, **variant),
                    "sharded")
        with open(index) as f:
            idx = json.load(f)
        os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
        with open(os.path.join(out, "sharded", index_name[0]), "w") as f:
            json.dump(idx, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"  sharded: {len(shards)} shards, index {index_name[0]} kept")

        sd = original_state_dict(unet, vae)
        names = {}
        for k in unet.state_dict():
            names[k] = "model.diffusion_model." + to_original_name(unet_prefixes(unet.config), k)
        with open(os.path.join(out, "original-names.txt"), "w") as f:
            f.write(f"# {name}: diffusers UNet key -> original single-file key "
                    "(make_goldens.py; read back by diffusers' from_single_file)\n")
            for k in sorted(names):
                f.write(f"{k}\t{names[k]}\n")
        # The .safetensors single file is not kept: the Rust test writes it (write_original)
        # and checks its names against original-names.txt.
        st = os.path.join(tmp, f"{name}.safetensors")
        write_safetensors(st, {k: v.contiguous() for k, v in sd.items()})
        ck = os.path.join(tmp if not commit_torch_files else out, f"{name}.ckpt")
        torch.save({"state_dict": sd, "global_step": 1000,
                    "optimizer_states": [{"state": {}, "param_groups": []}]}, ck)
        for path in (st, ck):
            u = UNet2DConditionModel.from_single_file(path, config=d, subfolder="unet",
                                                      torch_dtype=unet.dtype)
            v = AutoencoderKL.from_single_file(path, config=d, subfolder="vae", torch_dtype=vae.dtype)
            assert_same(unet, u, path)
            assert_same(vae, v, path)
            print(f"  {os.path.basename(path)} ({file_size(path)} bytes): from_single_file reads the same weights")
        if commit_torch_files:
            for part, model in (("unet", unet), ("vae", vae)):
                pd = os.path.join(out, "bin", part)
                model.save_pretrained(pd, safe_serialization=False, **variant)
                back = type(model).from_pretrained(pd, torch_dtype=model.dtype, **variant)
                assert_same(model, back, pd)
                print(f"  bin/{part}: {sorted(os.listdir(pd))}")


# --------------------------------------------------------------------------------------------
def main():
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}")
    os.makedirs(DATA, exist_ok=True)
    # `--only sdxl,forms` writes only those outputs (the others' files stay as committed).
    only = set(sys.argv[sys.argv.index("--only") + 1].split(",")) if "--only" in sys.argv else None
    if only is None or "base" in only:
        make_ops_goldens()
        for name, spec in MODELS.items():
            make_model_goldens(name, spec)
        make_fidelity_goldens()
    if only is None or "sdxl" in only:
        for name, spec in MODELS_XL.items():
            make_model_goldens(name, spec)
    if only is None or "forms" in only:
        for name, spec in {**MODELS, **MODELS_XL}.items():
            make_forms(name, spec, commit_torch_files=name in MODELS_XL)

    total = 0
    print("\nfiles under tests/data:")
    for dp, _, fns in os.walk(DATA):
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            total += file_size(p)
            print(f"  {os.path.relpath(p, ROOT):60s} {file_size(p):9d}")
    print(f"total {total} bytes ({total / 2**20:.2f} MiB)")
    assert total < 26 * 2 ** 20


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Trains the figure model: an SD-family AutoencoderKL and UNet2DConditionModel on renders of
the figure world (`skp-world dataset`), on the CPU.

Stages (each checkpoints every --checkpoint-minutes and resumes with --resume):

  vae      AutoencoderKL 128x128 -> 32x32x4 on random crops (L1 + MSE + tiny KL), then the
           latent scaling_factor (1 / std of the latent means) -> OUT/vae
  latents  the scaled latent means of every training render -> --latents (WORK/latents.npy)
  unet     UNet2DConditionModel on those latents, SD's DDPM schedule (scaled_linear betas
           0.00085..0.012, 1000 steps), epsilon prediction; the context is one learned part
           embedding per part slot (a null embedding where the part is absent) -> OUT/unet and
           OUT/part-tokens.safetensors (the embedding table as a stablekeypoints tokens file)
  export   the UNet and part tokens of the latest unet checkpoint -> OUT (for a look at a
           run in progress)
  pack     the trained VAE, UNet and part tokens in OUT -> DEST in f16 (the committed
           models/figure), with the training curves of WORK
  check    VAE reconstruction error on held-out renders -> OUT/checks.json
  diagnose does the UNet know the figure? Its denoising error on held-out renders against
           the same renders scrambled in 16x16 blocks, and with the true context against
           contexts that lie (parts the image shows marked absent, all absent, random
           embeddings) -> OUT/checks.json

Usage (scripts/world/make-model.sh runs every stage as the committed model was made):
  python scripts/world/train.py vae --data train.safetensors --work WORK --out OUT
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from safetensors.torch import save_file

NUM_PARTS = 14
CONTEXT_DIM = 64
LATENT_CHANNELS = 4


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def load_bundle(path):
    if path is None:
        sys.exit("this stage needs --data (an skp-world dataset bundle)")
    b = load_file(path)
    return {k: torch.from_numpy(v) for k, v in b.items()}


def to_unit(images_u8):
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float in [-1, 1]."""
    return images_u8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[32, 64, 64],
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=128,
        # No mid-block attention: the VAE is purely convolutional, so crops train it.
        mid_block_add_attention=False,
    )


def make_unet():
    from diffusers import UNet2DConditionModel

    # Latent 32: blocks at 32, 16, 8, 4. Cross-attention at 16 and 8 only, so the recorded
    # layers (first 4 up-path cross-attentions of side <= 16) are up_blocks.1 (8x8) and
    # up_blocks.2 (16x16).
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=[32, 64, 96, 96],
        layers_per_block=1,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )


class Curve:
    """Appends step, loss, lr and elapsed seconds to a CSV (kept across resumes)."""

    def __init__(self, path, resume):
        self.path = path
        if not (resume and os.path.exists(path)):
            with open(path, "w") as f:
                f.write("step,loss,lr,elapsed_s\n")

    def add(self, step, loss, lr, elapsed):
        with open(self.path, "a") as f:
            f.write(f"{step},{loss:.6f},{lr:.3g},{elapsed:.1f}\n")


def save_ckpt(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def lr_at(step, base, warmup, total, final_frac):
    if step < warmup:
        return base * (step + 1) / warmup
    # Cosine from base to base * final_frac over the rest.
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def train_loop(name, args, model, params, batch_fn, loss_fn, extra=None):
    """Shared optimiser loop with time-based checkpoints. Randomness per step is seeded
    from (seed, step), so a resumed run draws the same batches as an uninterrupted one.
    `extra`: named tensors trained beside the model, checkpointed with it."""
    extra = extra or {}
    os.makedirs(args.work, exist_ok=True)
    ckpt = os.path.join(args.work, f"{name}.ckpt.pt")
    curve = Curve(os.path.join(args.work, f"{name}-curve.csv"), args.resume)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if args.resume and os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        for k, v in st.get("extra", {}).items():
            extra[k].data.copy_(v)
        log(f"{name}: resumed at step {step} ({elapsed / 60:.1f} min trained)")
    t0, last_ckpt, acc, nacc = time.time(), time.time(), 0.0, 0
    model.train()
    while step < args.steps:
        lr = lr_at(step, args.lr, args.warmup, args.steps, args.final_lr_fraction)
        for g in opt.param_groups:
            g["lr"] = lr
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        loss = loss_fn(*batch_fn(gen), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        acc, nacc = acc + loss.item(), nacc + 1
        if step % args.log_every == 0 or step == args.steps:
            now = elapsed + time.time() - t0
            curve.add(step, acc / nacc, lr, now)
            log(f"{name} step {step}/{args.steps} loss {acc / nacc:.5f} lr {lr:.2e} ({now / 60:.1f} min)")
            acc, nacc = 0.0, 0
        if time.time() - last_ckpt > 60 * args.checkpoint_minutes or step == args.steps:
            save_ckpt(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                             "elapsed": elapsed + time.time() - t0,
                             "extra": {k: v.detach().clone() for k, v in extra.items()}})
            last_ckpt = time.time()
    return elapsed + time.time() - t0


def stage_vae(args):
    data = load_bundle(args.data)["images"]
    n, size = data.shape[0], data.shape[1]
    vae = make_vae()
    log(f"vae: {sum(p.numel() for p in vae.parameters())} parameters, {n} images, crops {args.crop}")

    def batch(gen):
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        ox = torch.randint(0, size - args.crop + 1, (args.batch,), generator=gen)
        oy = torch.randint(0, size - args.crop + 1, (args.batch,), generator=gen)
        crops = torch.stack([data[i, y:y + args.crop, x:x + args.crop]
                             for i, x, y in zip(idx.tolist(), ox.tolist(), oy.tolist())])
        return (to_unit(crops),)

    def loss(x, gen):
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        y = vae.decode(z).sample
        return F.l1_loss(y, x) + F.mse_loss(y, x) + args.kl_weight * post.kl().mean()

    secs = train_loop("vae", args, vae, list(vae.parameters()), batch, loss)
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(to_unit(data[i:i + 32])).latent_dist.mean
                         for i in range(0, min(n, 1024), 32)])
    std = lat.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(os.path.join(args.out, "vae"), safe_serialization=True)
    log(f"vae: trained {secs / 60:.1f} min; latent mean {lat.mean().item():.4f} std {std:.4f} "
        f"-> scaling_factor {1.0 / std:.5f}; saved {args.out}/vae")


def load_vae(out):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(os.path.join(out, "vae")).float().eval()


def stage_latents(args):
    data = load_bundle(args.data)["images"][: args.latent_images]
    vae = load_vae(args.out)
    sf = vae.config.scaling_factor
    out = np.zeros((data.shape[0], LATENT_CHANNELS, 32, 32), np.float32)
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, data.shape[0], 64):
            out[i:i + 64] = (vae.encode(to_unit(data[i:i + 64])).latent_dist.mean * sf).numpy()
            if i % 1024 == 0:
                log(f"latents {i}/{data.shape[0]} ({time.time() - t0:.0f} s)")
    path = latents_path(args)
    np.save(path + ".tmp.npy", out)
    os.replace(path + ".tmp.npy", path)
    log(f"latents: std {out.std():.4f} -> {path} ({time.time() - t0:.0f} s)")


def latents_path(args):
    return args.latents or os.path.join(args.work, "latents.npy")


def stage_unet(args):
    from diffusers import DDPMScheduler

    b = load_bundle(args.data)
    lat = torch.from_numpy(np.load(latents_path(args)))
    n = lat.shape[0]
    present = b["present"][:n].bool()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", prediction_type="epsilon")
    abar = sched.alphas_cumprod
    torch.manual_seed(args.seed)
    unet = make_unet()
    # Rows 0..13: the parts; row 14: the null embedding of an absent part.
    emb = torch.nn.Parameter(torch.randn(NUM_PARTS + 1, CONTEXT_DIM))
    if args.init:
        # Fine-tuning: the UNet and part embeddings of a trained model.
        st = torch.load(args.init, weights_only=False)
        unet.load_state_dict(st["model"])
        emb.data.copy_(st["extra"]["emb"])
        log(f"unet: from {args.init} (step {st['step']})")
    log(f"unet: {sum(p.numel() for p in unet.parameters())} parameters, {n} latents")
    slots = torch.arange(NUM_PARTS)

    def batch(gen):
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        return lat[idx], present[idx]

    def loss(z0, pres, gen):
        t = torch.randint(0, 1000, (z0.shape[0],), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        ids = torch.where(pres, slots.expand_as(pres), torch.full_like(pres, NUM_PARTS, dtype=torch.long))
        ctx = emb[ids]
        pred = unet(zt, t, encoder_hidden_states=ctx).sample
        return F.mse_loss(pred, eps)

    secs = train_loop(args.name, args, unet, list(unet.parameters()) + [emb], batch, loss,
                      extra={"emb": emb})
    save_unet(args.out, unet, emb.detach())
    log(f"unet: trained {secs / 60:.1f} min; saved {args.out}/unet and part-tokens.safetensors")


def save_unet(out, unet, emb):
    unet.eval()
    unet.save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
    save_part_tokens(os.path.join(out, "part-tokens.safetensors"), emb)


def stage_export(args):
    """The UNet and part tokens of the latest checkpoint (while training goes on)."""
    st = torch.load(os.path.join(args.work, f"{args.name}.ckpt.pt"), weights_only=False)
    unet = make_unet()
    unet.load_state_dict(st["model"])
    save_unet(args.out, unet, st["extra"]["emb"])
    log(f"export: step {st['step']} ({st['elapsed'] / 60:.1f} min trained) -> {args.out}")


def stage_pack(args):
    """f16 halves the committed size; the engine computes in f32 from it either way, and
    every figure of models/figure/README.md is measured on the packed weights."""
    import shutil
    from diffusers import UNet2DConditionModel

    if not args.dest:
        sys.exit("pack needs --dest")
    load_vae(args.out).half().save_pretrained(os.path.join(args.dest, "vae"), safe_serialization=True)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.out, "unet")).eval()
    unet.half().save_pretrained(os.path.join(args.dest, "unet"), safe_serialization=True)
    shutil.copy(os.path.join(args.out, "part-tokens.safetensors"), args.dest)
    for name in ("vae-curve.csv", "unet-curve.csv") + tuple(args.curves):
        shutil.copy(os.path.join(args.work, name), args.dest)
    log(f"pack: {args.out} -> {args.dest} (f16)")


def save_part_tokens(path, emb):
    """The model's own part embeddings as a stablekeypoints tokens file: all 15 rows (the
    softmax runs over them all), the 14 parts as keypoints in part order."""
    save_file(
        {"embeddings": emb.float().contiguous(),
         "indices": torch.arange(NUM_PARTS, dtype=torch.int64)},
        path,
        metadata={"input_size": "128", "map_res": "32", "num_layers": "4", "timestep": "0",
                  "source": "figure model part embeddings (rows 0-13 parts, 14 null)"},
    )


def stage_check(args):
    """VAE reconstruction (mean latent -> decoder) on held-out renders."""
    data = load_bundle(args.data)["images"][: args.count]
    vae = load_vae(args.out)
    errs, sq = [], []
    with torch.no_grad():
        for i in range(0, data.shape[0], 32):
            x = to_unit(data[i:i + 32])
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            d = (y - x) * 127.5
            errs.append(d.abs().mean(dim=(1, 2, 3)))
            sq.append(d.pow(2).mean(dim=(1, 2, 3)))
    mae = torch.cat(errs)
    mse = torch.cat(sq)
    psnr = (10 * torch.log10(255.0 ** 2 / mse)).mean().item()
    res = {"vae_heldout_images": int(mae.numel()), "vae_mae_u8": mae.mean().item(),
           "vae_mae_u8_worst": mae.max().item(), "vae_psnr_db": psnr}
    path = os.path.join(args.out, "checks.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(res)
    json.dump(old, open(path, "w"), indent=1, sort_keys=True)
    log(f"check: {res}")
    if res["vae_mae_u8"] > args.max_mae:
        sys.exit(f"VAE mean absolute error {res['vae_mae_u8']:.2f} exceeds {args.max_mae}")


def scramble_blocks(images, block, gen):
    """[B, H, W, 3] -> the same pixels with the image's block x block tiles shuffled: the
    colours and strokes of a figure, none of its layout."""
    b, h, w, c = images.shape
    t = images.reshape(b, h // block, block, w // block, block, c).permute(0, 1, 3, 2, 4, 5)
    t = t.reshape(b, -1, block, block, c)
    perm = torch.stack([torch.randperm(t.shape[1], generator=gen) for _ in range(b)])
    t = t[torch.arange(b)[:, None], perm]
    t = t.reshape(b, h // block, w // block, block, block, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, h, w, c)


def stage_diagnose(args):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file as load_torch

    b = load_bundle(args.data)
    n = min(args.count, b["images"].shape[0])
    images, present = b["images"][:n], b["present"][:n].bool()
    vae = load_vae(args.out)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.out, "unet")).float().eval()
    emb = load_torch(os.path.join(args.out, "part-tokens.safetensors"))["embeddings"].float()
    abar = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear").alphas_cumprod
    gen = torch.Generator().manual_seed(args.seed)
    sf = vae.config.scaling_factor
    with torch.no_grad():
        enc = lambda x: torch.cat([vae.encode(to_unit(x[i:i + 64])).latent_dist.mean * sf
                                   for i in range(0, n, 64)])
        z_true, z_scr = enc(images), enc(scramble_blocks(images, 16, gen))
    slots = torch.arange(NUM_PARTS).expand(n, NUM_PARTS)
    null = torch.full_like(slots, NUM_PARTS)
    true_ids = torch.where(present, slots, null)
    # Lies: each shown part marked absent with probability 1/2 (at least one per image).
    hide = torch.rand(n, NUM_PARTS, generator=gen) < 0.5
    hide[torch.arange(n), torch.randint(0, NUM_PARTS, (n,), generator=gen)] = True
    contexts = {
        "true": emb[true_ids],
        "half_hidden": emb[torch.where(present & ~hide, slots, null)],
        "all_absent": emb[null],
        "random": torch.randn(n, NUM_PARTS, CONTEXT_DIM, generator=gen) * emb.std(),
    }
    res = {"diagnose_images": n, "diagnose_timesteps": args.diagnose_timesteps}
    for t in args.diagnose_timesteps:
        eps = torch.randn(z_true.shape, generator=gen)
        a = abar[t]
        def err(z0, ctx):
            zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
            with torch.no_grad():
                pred = torch.cat([unet(zt[i:i + 64], t, encoder_hidden_states=ctx[i:i + 64]).sample
                                  for i in range(0, n, 64)])
            return F.mse_loss(pred, eps).item()
        row = {name: err(z_true, ctx) for name, ctx in contexts.items()}
        row["scrambled_images"] = err(z_scr, contexts["true"])
        res[f"denoise_mse_t{t}"] = row
        log(f"diagnose t={t}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    path = os.path.join(args.out, "checks.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(res)
    json.dump(old, open(path, "w"), indent=1, sort_keys=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["vae", "latents", "unet", "export", "pack", "check",
                                      "diagnose"])
    p.add_argument("--data", help="skp-world dataset bundle")
    p.add_argument("--work", default="out/world/work", help="checkpoints, curves, latents")
    p.add_argument("--out", default="out/world/model", help="trained model (f32)")
    p.add_argument("--dest", help="pack: the committed model directory")
    p.add_argument("--latents", help="latents file [default: WORK/latents.npy]")
    p.add_argument("--init", help="unet: start from this unet checkpoint (fine-tuning)")
    p.add_argument("--name", default="unet", help="unet, export: checkpoint and curve name")
    p.add_argument("--curves", nargs="*", default=[], help="pack: more curves of WORK to copy")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--final-lr-fraction", type=float, default=0.1)
    p.add_argument("--crop", type=int, default=48, help="vae: training crop side")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--count", type=int, default=512, help="check, diagnose: held-out images")
    p.add_argument("--diagnose-timesteps", type=int, nargs="+", default=[50, 200, 400, 700])
    p.add_argument("--latent-images", type=int, default=10000,
                   help="latents: encode the first N training renders (the UNet's data)")
    p.add_argument("--max-mae", type=float, default=4.0, help="check: bound on the VAE error")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    stages = {"vae": stage_vae, "latents": stage_latents, "unet": stage_unet,
              "export": stage_export, "pack": stage_pack, "check": stage_check, "diagnose": stage_diagnose}
    stages[args.stage](args)


if __name__ == "__main__":
    main()

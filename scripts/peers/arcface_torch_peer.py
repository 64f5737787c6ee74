#!/usr/bin/env python3
"""The PyTorch peer of `cargo xtask bench train` and `cargo xtask bench head`: what a user of
InsightFace's arcface_torch would run. An IResNet (arcface_torch's `backbones/iresnet.py`, same
layers and names) and PartialFC_V2 (arcface_torch's `partial_fc_v2.py`: class sampling by
`torch.rand` + top-k with the positives forced in, normalised weight, CombinedMarginLoss ArcFace
m=0.5, SGD with momentum 0.9 and weight decay 5e-4 on backbone and head), AMP (autocast +
GradScaler) when asked, on synthetic images and labels, one process (world size 1).

Two modes, each printing one JSON object (medians over the timed steps, after warm-up):

  --mode train (default): whole training steps (backbone forward and backward, head, gradient
      clipping at norm 5, SGD) of `--model` at `--batch` images per step: images/s. On a GPU
      also the peak memory of this process as the CUDA driver reports it (nvidia-smi, polled on
      a thread, the same probe `bench train` uses) and PyTorch's own allocator peak.
  --mode head: the head alone, as `cargo xtask bench head` times it: a fresh random batch of
      `--batch` embeddings of size `--embedding-size` and labels each step, forward (normalise,
      sample, logits, margin, cross-entropy), backward to the embeddings and the weight, SGD
      step of the weight: step seconds.

    python3 scripts/peers/arcface_torch_peer.py --model iresnet50 --batch 128 --classes 100000 \
        --sample-ratio 1.0 [--amp] [--steps 20] [--device cuda]
    python3 scripts/peers/arcface_torch_peer.py --device cpu --threads 2 --model iresnet_tiny \
        --channels 1 --input-size 28 --embedding-size 128 --classes 8 --scale 32 --batch 128
    python3 scripts/peers/arcface_torch_peer.py --mode head --device cpu --threads 2 \
        --classes 100000 --batch 128 --embedding-size 512

`cargo xtask bench train --peer-python PYTHON` and `cargo xtask bench head --peer-python
PYTHON` run it interleaved with their own steps and print the ratio.

Needs PyTorch (`pip install torch`); the project does not install it. Not run by CI.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

# The allocator of a tuned PyTorch CPU install: jemalloc, keeping freed pages (no decay), so the
# step's large buffers (the head's C x D gradient) are not mapped and faulted in anew each step,
# as glibc's malloc does for anything over 32 MiB. Used when Debian's libjemalloc2 is installed
# (`apt-get install libjemalloc2`) unless PLSC_PEER_ALLOCATOR=system; the report says which.
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def allocator():
    """Re-executes this script under jemalloc when it is installed and not yet loaded; returns
    the allocator in use."""
    if os.environ.get("PLSC_PEER_ALLOCATOR") == "system" or not os.path.exists(JEMALLOC):
        return "system (glibc malloc)"
    if JEMALLOC not in os.environ.get("LD_PRELOAD", ""):
        env = dict(os.environ, LD_PRELOAD=JEMALLOC, MALLOC_CONF=JEMALLOC_CONF)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    return f"jemalloc ({os.environ.get('MALLOC_CONF', '')})"


ALLOCATOR = allocator() if __name__ == "__main__" else None

# PyTorch's OpenMP threads spin while they wait for work (libgomp's OMP_WAIT_POLICY=ACTIVE
# by default). On a machine whose cores other processes share, the spinning threads take the
# cores from the ones with work: measured here at 2-3x fewer images/s than with PASSIVE
# (iresnet_tiny 64x64, load average 7 on 2 cores). Our rayon threads sleep when idle, so the
# peer sleeps too, unless the caller sets OMP_WAIT_POLICY; the report says which.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the re-exec above)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from arcface_torch_iresnet import LAYERS, IResNet  # noqa: E402

# Registry names of plsc-rs (crates/plsc-models/src/registry.rs) -> (blocks per stage, stage
# widths, stem width): arcface_torch's depths at its widths, and plsc-rs's `iresnet_tiny`.
MODELS = {name: (layers, (64, 128, 256, 512), 64) for name, layers in LAYERS.items()}
MODELS["iresnet_tiny"] = ((1, 1, 1, 1), (16, 32, 64, 128), 16)

# ---- arcface_torch losses.py (CombinedMarginLoss, ArcFace branch) and partial_fc_v2.py ----


class ArcFace(nn.Module):
    def __init__(self, s=64.0, m2=0.5):  # arcface_torch's defaults
        super().__init__()
        self.s, self.m2 = s, m2

    def forward(self, logits, labels):
        index_positive = torch.where(labels != -1)[0]
        target_logit = logits[index_positive, labels[index_positive].view(-1)]
        with torch.no_grad():
            target_logit.arccos_()
            logits.arccos_()
            final_target_logit = target_logit + self.m2
            logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
            logits.cos_()
        return logits * self.s


class PartialFCV2(nn.Module):
    """arcface_torch's PartialFC_V2 at world size 1."""

    def __init__(self, margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False):
        super().__init__()
        self.margin_softmax = margin_loss
        self.sample_rate = sample_rate
        self.fp16 = fp16
        self.num_local = num_classes
        self.class_start = 0
        self.num_sample = int(sample_rate * self.num_local)
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))

    def sample(self, labels, index_positive):
        with torch.no_grad():
            positive = torch.unique(labels[index_positive], sorted=True)
            if self.num_sample - positive.size(0) >= 0:
                perm = torch.rand(size=[self.num_local], device=labels.device)
                perm[positive] = 2.0
                index = torch.topk(perm, k=self.num_sample)[1]
                index = index.sort()[0]
            else:
                index = positive
            labels[index_positive] = torch.searchsorted(index, labels[index_positive])
        return self.weight[index]

    def forward(self, embeddings, labels):
        labels = labels.long().view(-1, 1)
        index_positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local)
        labels[~index_positive] = -1
        labels[index_positive] -= self.class_start
        weight = self.sample(labels, index_positive) if self.sample_rate < 1 else self.weight
        with torch.autocast(embeddings.device.type, enabled=self.fp16):
            logits = F.linear(F.normalize(embeddings), F.normalize(weight))
        if self.fp16:
            logits = logits.float()
        logits = logits.clamp(-1, 1)
        logits = self.margin_softmax(logits, labels)
        return F.cross_entropy(logits, labels.view(-1), ignore_index=-1)


# ---- the driver's view of this process's memory -------------------------------------------


def driver_used_mib():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total = None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            total = (total or 0.0) + float(parts[1])
    return total


class PeakProbe:
    def __init__(self):
        self.peak = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            m = driver_used_mib()
            if m is not None:
                self.peak = m if self.peak is None else max(self.peak, m)
            time.sleep(0.1)

    def finish(self):
        self.stop.set()
        self.thread.join()
        m = driver_used_mib()
        if m is not None:
            self.peak = m if self.peak is None else max(self.peak, m)
        return self.peak


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="train", choices=["train", "head"])
    ap.add_argument("--model", default="iresnet50", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=128, help="images (embeddings) per step")
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--embedding-size", type=int, default=512)
    ap.add_argument("--input-size", type=int, default=112)
    ap.add_argument("--channels", type=int, default=3, help="input channels (1: grey)")
    ap.add_argument("--sample-ratio", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=64.0, help="ArcFace scale s")
    ap.add_argument("--margin", type=float, default=0.5, help="ArcFace margin m")
    ap.add_argument("--amp", action="store_true", help="autocast (f16) + GradScaler, as arcface_torch's fp16")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    return ap.parse_args()


def common_report(args, times):
    step_s = statistics.median(times)
    return {
        "batch": args.batch,
        "classes": args.classes,
        "embedding_size": args.embedding_size,
        "sample_ratio": args.sample_ratio,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "timed_steps": len(times),
        "step_seconds_median": step_s,
        "step_seconds_all": times,
        "torch": torch.__version__,
        "allocator": ALLOCATOR,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "host": platform.node(),
    }


def run_head(args, device):
    """The head's step alone, as `cargo xtask bench head` times it."""
    head = PartialFCV2(ArcFace(args.scale, args.margin), args.embedding_size, args.classes,
                       args.sample_ratio, fp16=args.amp).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator(device="cpu").manual_seed(1)
    batches = [
        (torch.randn(args.batch, args.embedding_size, generator=gen),
         torch.randint(0, args.classes, (args.batch,), generator=gen))
        for _ in range(min(args.warmup + args.steps, 8))
    ]
    times = []
    for step in range(args.warmup + args.steps):
        x, y = batches[step % len(batches)]
        x = x.to(device).requires_grad_(True)
        y = y.to(device)
        sync(device)
        t = time.perf_counter()
        loss = head(x, y.clone())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    report = {"bench": "head-peer-arcface_torch", "mode": "head"}
    report.update(common_report(args, times))
    report["last_loss"] = loss.item()
    return report


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_train(args, device):
    """Whole training steps of backbone and head."""
    gpu = device.type == "cuda"
    probe = PeakProbe() if gpu else None
    layers, widths, stem = MODELS[args.model]
    backbone = IResNet(layers, widths, stem, input_size=args.input_size,
                       num_features=args.embedding_size, fp16=args.amp, arcface_init=True,
                       in_channels=args.channels).to(device)
    head = PartialFCV2(ArcFace(args.scale, args.margin), args.embedding_size, args.classes,
                       args.sample_ratio, fp16=args.amp).to(device)
    opt = torch.optim.SGD(
        [{"params": backbone.parameters()}, {"params": head.parameters()}],
        lr=0.1, momentum=0.9, weight_decay=5e-4,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
    gen = torch.Generator(device="cpu").manual_seed(1)
    side = args.input_size
    batches = [
        (torch.rand(args.batch, args.channels, side, side, generator=gen) * 2 - 1,
         torch.randint(0, args.classes, (args.batch,), generator=gen))
        for _ in range(2)
    ]
    times = []
    for step in range(args.warmup + args.steps):
        x, y = batches[step % 2]
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        sync(device)
        t = time.perf_counter()
        loss = head(backbone(x), y.clone())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
        scaler.step(opt)
        scaler.update()
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    report = {"bench": "train-peer-arcface_torch", "mode": "train", "model": args.model,
              "input": [args.channels, side, side], "amp": args.amp}
    report.update(common_report(args, times))
    report["images_per_second"] = args.batch / report["step_seconds_median"]
    report["gpu_peak_memory_mib"] = probe.finish() if probe else None
    report["torch_max_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20 if gpu else None
    report["last_loss"] = loss.item()
    report["gpu"] = torch.cuda.get_device_name(0) if gpu else None
    return report


def main():
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    report = run_head(args, device) if args.mode == "head" else run_train(args, device)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

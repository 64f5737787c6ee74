#!/usr/bin/env python3
"""The PyTorch peer of `cargo xtask bench train`: what a user of InsightFace's arcface_torch
would run. An IResNet (arcface_torch's `backbones/iresnet.py`, same layers and names) and
PartialFC_V2 (arcface_torch's `partial_fc_v2.py`: class sampling by `torch.rand` + top-k with
the positives forced in, normalised weight, CombinedMarginLoss ArcFace s=64 m=0.5, SGD with
momentum 0.9 and weight decay 5e-4 on backbone and head), AMP (autocast + GradScaler) when
asked, on synthetic images and labels, one process (world size 1, as `bench train --device
cuda` runs).

It prints one JSON object with images/s (median over the timed steps, after warm-up) and the
peak memory of this process as the CUDA driver reports it (nvidia-smi, polled on a thread,
the same probe `bench train` uses), plus PyTorch's own allocator peak for reference.

    python3 scripts/peers/arcface_torch_peer.py --model iresnet50 --batch 128 --classes 100000 \
        --sample-ratio 1.0 [--amp] [--steps 20] [--device cuda]

Needs PyTorch (`pip install torch`); the project does not install it. Not run by CI.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- arcface_torch backbones/iresnet.py ------------------------------------------------------


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)


class IBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    fc_scale = 7 * 7

    def __init__(self, layers, num_features=512, fp16=False, in_channels=3, input_size=112):
        super().__init__()
        self.fp16 = fp16
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0, inplace=True)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes, stride),
                nn.BatchNorm2d(planes, eps=1e-05),
            )
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=self.fp16):
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.prelu(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        x = self.fc(x.float() if self.fp16 else x)
        x = self.features(x)
        return x


LAYERS = {
    "iresnet18": [2, 2, 2, 2],
    "iresnet34": [3, 4, 6, 3],
    "iresnet50": [3, 4, 14, 3],
    "iresnet100": [3, 13, 30, 3],
}

# ---- arcface_torch losses.py (CombinedMarginLoss, ArcFace branch) and partial_fc_v2.py ----


class ArcFace(nn.Module):
    def __init__(self, s=64.0, m2=0.5):
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="iresnet50", choices=sorted(LAYERS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--embedding-size", type=int, default=512)
    ap.add_argument("--input-size", type=int, default=112)
    ap.add_argument("--sample-ratio", type=float, default=1.0)
    ap.add_argument("--amp", action="store_true", help="autocast (f16) + GradScaler, as arcface_torch's fp16")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    torch.manual_seed(0)
    probe = PeakProbe() if gpu else None
    backbone = IResNet(LAYERS[args.model], args.embedding_size, fp16=args.amp,
                       input_size=args.input_size).to(device)
    head = PartialFCV2(ArcFace(), args.embedding_size, args.classes, args.sample_ratio,
                       fp16=args.amp).to(device)
    opt = torch.optim.SGD(
        [{"params": backbone.parameters()}, {"params": head.parameters()}],
        lr=0.1, momentum=0.9, weight_decay=5e-4,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
    gen = torch.Generator(device="cpu").manual_seed(1)
    batches = [
        (torch.rand(args.batch, 3, args.input_size, args.input_size, generator=gen) * 2 - 1,
         torch.randint(0, args.classes, (args.batch,), generator=gen))
        for _ in range(2)
    ]
    times = []
    for step in range(args.warmup + args.steps):
        x, y = batches[step % 2]
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = head(backbone(x), y.clone())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
        scaler.step(opt)
        scaler.update()
        if gpu:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    report = {
        "bench": "train-peer-arcface_torch",
        "model": args.model,
        "batch": args.batch,
        "classes": args.classes,
        "embedding_size": args.embedding_size,
        "input": [3, args.input_size, args.input_size],
        "sample_ratio": args.sample_ratio,
        "amp": args.amp,
        "device": args.device,
        "timed_steps": len(times),
        "step_seconds_median": step_s,
        "images_per_second": args.batch / step_s,
        "gpu_peak_memory_mib": probe.finish() if probe else None,
        "torch_max_memory_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if gpu else None,
        "last_loss": loss.item(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "host": platform.node(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Export badprune's ONNX fixtures from PyTorch: `make fixtures-onnx`.

usage: export_onnx.py TESTDATA

Writes into TESTDATA/onnx small CNN classifiers as torch.onnx.export writes
them (opsets 9, 11, 13 and 17), each with NAME.json beside it: PyTorch's own
logits (before the final softmax) for probe inputs that Go computes the
same way (see probe), and the model's input shape. Also exports the demo
lab's DeepID BadNet, TESTDATA/lab/models/bd_net.h5, to
TESTDATA/lab/models/bd_net.onnx, its weights read from the Keras file with
h5py and its layers as the Keras config says; badprune must give exactly
the Keras file's results with it.

Needs Debian's python3-torch, python3-onnx and python3-h5py. Same inputs,
same outputs: the seeds are fixed.
"""
import json
import os
import sys

import h5py
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F


def probe(shape, scale=1.0, offset=0.0):
    """Deterministic inputs; Go's onnxmodel tests compute the same floats."""
    k = np.arange(int(np.prod(shape)), dtype=np.int64)
    v = ((k * 7919 + 13) % 2003) / 2003.0 - 0.5
    return (v * scale + offset).astype(np.float32).reshape(shape)


# ---- the DeepID of the Keras fixtures, weights from their files

def keras_config(path):
    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        layers = {l["config"]["name"]: l for l in cfg["config"]["layers"]}
        weights = {}
        for name, l in layers.items():
            if l["class_name"] in ("Conv2D", "Dense"):
                g = f["model_weights"][name][name]
                weights[name] = (np.array(g["kernel:0"]), np.array(g["bias:0"]))
    return layers, weights


class DeepID(nn.Module):
    """The lab's DeepID (conv_1 4x4, pool, conv_2 3x3, pool, conv_3 3x3,
    pool, conv_4 2x2; fc_1 on flattened pool_3 plus fc_2 on flattened
    conv_4, ReLU, output with softmax), with a Keras file's weights.

    flatten: "nchw" flattens as PyTorch does (fc weights' columns permuted
    from Keras's H, W, C order), "nhwc" permutes to Keras's order first (a
    model that mimics Keras), "view" is x.view(x.size(0), -1), as old code
    wrote it.
    """

    def __init__(self, path, flatten="nchw"):
        super().__init__()
        layers, w = keras_config(path)
        self.flatten = flatten
        self.logits = False
        h, wd, c = layers["input"]["config"]["batch_input_shape"][1:]
        self.input_shape = (c, h, wd)
        for name in ("conv_1", "conv_2", "conv_3", "conv_4"):
            k, b = w[name]
            conv = nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2])
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(b)
            setattr(self, name, conv)
        self.pool = nn.MaxPool2d(2)
        # The feature maps fc_1 and fc_2 read, to permute their weights.
        with torch.no_grad():
            p3 = self.trunk(torch.zeros(1, *self.input_shape))
            c4 = self.conv_4(p3)
        for name, fmap in (("fc_1", p3), ("fc_2", c4)):
            k, b = w[name]
            fc = nn.Linear(k.shape[0], k.shape[1])
            wt = k.T
            if flatten != "nhwc":
                _, ch, hh, ww = fmap.shape
                cc, yy, xx = np.meshgrid(np.arange(ch), np.arange(hh), np.arange(ww), indexing="ij")
                wt = wt[:, ((yy * ww + xx) * ch + cc).reshape(-1)]
            fc.weight.data = torch.from_numpy(np.ascontiguousarray(wt))
            fc.bias.data = torch.from_numpy(b)
            setattr(self, name, fc)
        k, b = w["output"]
        self.output = nn.Linear(k.shape[0], k.shape[1])
        self.output.weight.data = torch.from_numpy(np.ascontiguousarray(k.T))
        self.output.bias.data = torch.from_numpy(b)

    def trunk(self, x):
        x = self.pool(F.relu(self.conv_1(x)))
        x = self.pool(F.relu(self.conv_2(x)))
        return self.pool(F.relu(self.conv_3(x)))

    def flat(self, x):
        if self.flatten == "nhwc":
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        if self.flatten == "view":
            return x.view(x.size(0), -1)
        return torch.flatten(x, 1)

    def forward(self, x):
        p3 = self.trunk(x)
        c4 = F.relu(self.conv_4(p3))
        h = F.relu(self.fc_1(self.flat(p3)) + self.fc_2(self.flat(c4)))
        y = self.output(h)
        return y if self.logits else F.softmax(y, dim=1)


# ---- small CNNs with the heads and ops real exports have

class ReshapeGemm(nn.Module):
    """Conv, BatchNorm (folded into the conv by the exporter), ReLU, max
    pool, a stride-2 conv with PyTorch's symmetric padding, x.view(-1, D)
    (a Reshape to a Constant shape), Linear (Gemm), BatchNorm1d on the FC
    features between Unsqueeze and Squeeze, ReLU, Dropout, Linear, Softmax."""

    input_shape = (3, 20, 18)

    def __init__(self):
        super().__init__()
        self.logits = False
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(8 * 5 * 5, 16)
        self.bn_fc = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.conv2(x))
        x = x.view(-1, 8 * 5 * 5)
        x = self.bn_fc(self.fc1(x).unsqueeze(2)).squeeze(2)
        x = self.fc2(self.drop(F.relu(x)))
        return x if self.logits else F.softmax(x, dim=1)


class GapHead(nn.Module):
    """Normalization inside the model (Sub, Div), ReLU6 (Clip), a
    depthwise conv, LeakyReLU, a BatchNorm kept as a node, average pooling,
    an inception-like Concat, a residual Add, global average pooling,
    Flatten, a MatMul plus Add, Sigmoid, Linear and LogSoftmax."""

    input_shape = (3, 17, 19)

    def __init__(self):
        super().__init__()
        self.logits = False
        self.register_buffer("mean", torch.tensor([0.1, -0.05, 0.02]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.3, 0.2]).reshape(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 8, 1)
        self.b = nn.Conv2d(16, 8, 1)
        self.w = nn.Parameter(torch.randn(16, 12) * 0.3)
        self.bias = nn.Parameter(torch.randn(12) * 0.1)
        self.fc = nn.Linear(12, 6)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = F.relu6(self.stem(x))
        x = self.bn(F.leaky_relu(self.dw(x), 0.1))
        x = F.avg_pool2d(x, 2)
        a = self.a(x)
        b = self.b(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        x = torch.cat([a, b], dim=1) + x
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        x = torch.sigmoid(torch.matmul(x, self.w) + self.bias)
        x = self.fc(x)
        return x if self.logits else F.log_softmax(x, dim=1)


def randomize(model, seed):
    """Random weights and BatchNorm statistics of a sensible size."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.weight.data = 1 + 0.3 * torch.randn(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean.data = 0.3 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
    return model


def old_style(path):
    """Make an export look like PyTorch 1.3's: nodes without names, tensors
    named by numbers, the initializers listed among the inputs, IR 4."""
    m = onnx.load(path)
    g = m.graph
    keep = {i.name for i in g.initializer} | {g.input[0].name}
    names, k = {}, 0
    for n in g.node:
        n.name = ""
        for i, o in enumerate(n.output):
            if o not in keep and o not in names:
                names[o] = str(k)
                k += 1
    for n in g.node:
        n.input[:] = [names.get(i, i) for i in n.input]
        n.output[:] = [names.get(o, o) for o in n.output]
    for o in g.output:
        o.name = names.get(o.name, o.name)
    del g.value_info[:]
    for t in g.initializer:
        vi = onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        g.input.append(vi)
    m.ir_version = 4
    onnx.checker.check_model(m)
    onnx.save(m, path)


def export(model, path, opset, probe_scale=1.0, probe_offset=0.0, fixed_batch=None, post=None, with_logits=True):
    model.eval()
    n = fixed_batch or 4
    x = torch.from_numpy(probe((n,) + tuple(model.input_shape), probe_scale, probe_offset))
    kw = {}
    if not fixed_batch:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["output"], **kw)
        model.logits = True
        logits = model(x).numpy()
        model.logits = False
    if post:
        post(path)
    onnx.checker.check_model(onnx.load(path))
    print(f"{path}: opset {opset}, {os.path.getsize(path)} bytes")
    if not with_logits:
        return
    doc = {
        "opset": opset,
        "input_shape": list(x.shape),
        "probe": {"scale": probe_scale, "offset": probe_offset},
        "logits": [[float(v) for v in row] for row in logits],
    }
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    td = sys.argv[1]
    out = os.path.join(td, "onnx")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    tiny = os.path.join(td, "tiny", "model_full.h5")
    raw = dict(probe_scale=255.0, probe_offset=127.5)  # the DeepIDs take raw pixels
    export(DeepID(tiny), os.path.join(out, "deepid_tiny.onnx"), 11, **raw)
    export(DeepID(tiny, "nhwc"), os.path.join(out, "deepid_tiny_nhwc.onnx"), 17, **raw)
    export(DeepID(tiny, "view"), os.path.join(out, "deepid_tiny_old.onnx"), 9, post=old_style, **raw)
    export(randomize(ReshapeGemm(), 2), os.path.join(out, "reshape_gemm.onnx"), 9)
    export(randomize(ReshapeGemm(), 3), os.path.join(out, "reshape_gemm_b1.onnx"), 13, fixed_batch=1)
    export(randomize(GapHead(), 4), os.path.join(out, "gap_head.onnx"), 17)
    lab = os.path.join(td, "lab", "models", "bd_net.h5")
    # Checked against the Keras file itself (onnxmodel's and badprune's
    # tests), so no logits beside it.
    export(DeepID(lab), os.path.join(td, "lab", "models", "bd_net.onnx"), 11, with_logits=False, **raw)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Runs ONNX models exported by `cargo xtask export --onnx` with ONNX Runtime and compares their
embeddings with plsc-rs's (xtask/tests/onnx_cli.rs writes the cases; run it with
PLSC_TEST_ONNX=1, see .ci/run).

    python3 scripts/onnx_check.py CASES.json

CASES.json: {"tolerance": 1e-4, "batches": [1, 5], "cases": [{"name", "onnx", "input",
"expected", "input_shape": [N, C, S, S], "embedding_size", "metadata": {key: value}}]}; `input`
and `expected` are raw little-endian float32 files ([N, C, S, S] normalised images, and
plsc-rs's [N, D] embeddings of them). For each case and batch size b, the first b images are
run and every embedding must be within `tolerance` of plsc-rs's, relative to its norm. The
model's metadata properties must hold `metadata`. Prints one line per case and batch size;
exits 1 on any failure. Needs onnxruntime and numpy.
"""

import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    tol = spec["tolerance"]
    failures = 0
    for case in spec["cases"]:
        shape = case["input_shape"]
        x = np.fromfile(case["input"], dtype="<f4").reshape(shape)
        want = np.fromfile(case["expected"], dtype="<f4").reshape(shape[0], case["embedding_size"])
        session = ort.InferenceSession(case["onnx"], providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        for k, v in case["metadata"].items():
            if meta.get(k) != v:
                print(f"FAIL {case['name']}: metadata {k} = {meta.get(k)!r}, expected {v!r}")
                failures += 1
        inp = session.get_inputs()[0]
        for b in spec["batches"]:
            (got,) = session.run(None, {inp.name: x[:b]})
            ref = want[:b].astype(np.float64)
            rel = np.linalg.norm(got.astype(np.float64) - ref, axis=1) / np.linalg.norm(ref, axis=1)
            ok = got.shape == ref.shape and bool(np.all(rel <= tol))
            failures += not ok
            print(
                f"{'ok  ' if ok else 'FAIL'} {case['name']} batch {b}: output {list(got.shape)}, "
                f"max relative error {rel.max():.3e} (bound {tol:g})"
            )
    if failures:
        print(f"{failures} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()

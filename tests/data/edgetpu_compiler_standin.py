#!/usr/bin/env python3
"""A stand-in for Coral's edgetpu_compiler (x86-64 Linux only, not installable here) for export tests.

Takes the real command line (--show_operations --out_dir DIR --timeout_sec N MODEL), prints the real
compiler's report (tests/data/edgetpu_full.txt, with this model's names) and writes <stem>_edgetpu.tflite
(the input bytes: it maps nothing) and <stem>_edgetpu.log, as the real compiler does.
"""
import argparse
import shutil
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--show_operations", action="store_true")
parser.add_argument("--out_dir", required=True)
parser.add_argument("--timeout_sec", type=int, default=180)
parser.add_argument("model")
args = parser.parse_args()
model = Path(args.model)
stem = model.stem
report = (Path(__file__).with_name("edgetpu_full.txt").read_text()
          .replace("model_int8", stem))
out = Path(args.out_dir)
shutil.copyfile(model, out / f"{stem}_edgetpu.tflite")
(out / f"{stem}_edgetpu.log").write_text(Path(__file__).with_name("edgetpu_op_log.log").read_text()
                                         .replace("mnist4", stem))
sys.stdout.write(report)
